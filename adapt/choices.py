"""Names and defaults shared by the library and the command line.

Importable without torch: `adapt --help` loads every command module, and the deployment side
(TensorRT, numpy) must be able to show it.
"""

DEGRADATIONS = ("bicubic", "realesrgan")

# rank-aware allocation
SCORES = ("grad", "fisher", "activation", "random")
ALLOCATORS = ("paper", "marginal")
NORMALISATIONS = ("none", "size")
DEFAULT_R_MIN = 1
DEFAULT_R_MAX = 32
DEFAULT_BATCHES = 16
DEFAULT_BATCH = 8
DEFAULT_PATCH = 128
