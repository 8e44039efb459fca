"""Names and defaults shared by the library and the command line.

Importable without torch: `adapt --help` loads every command module, and the deployment side
(TensorRT, numpy) must be able to show it.
"""

DEFAULT_MODEL = "adaptsr-safmn-x4"  # pretrained, ships with the package: upscale and demo use it
DEGRADATIONS = ("bicubic", "realesrgan", "camera")
SEED_MAX = 2**32 - 1  # what every generator behind a seed (torch, numpy) accepts
MAX_SEEDS = 100  # `adapt study --seeds`: runs per spec
DEFAULT_DEGRADATION = "realesrgan"  # the paper's adaptation data (pretraining uses bicubic)

# rank-aware allocation: `adapt allocate` and `adapt train --rank-aware` share these defaults
SCORES = ("grad", "fisher", "activation", "random")
ALLOCATORS = ("paper", "marginal")
NORMALISATIONS = ("none", "size")
DEFAULT_SCORE = "grad"
DEFAULT_ALLOCATOR = "paper"
DEFAULT_NORMALISE = "none"
DEFAULT_R_MIN = 1
DEFAULT_R_MAX = 32
DEFAULT_BATCHES = 16
DEFAULT_BATCH = 8
DEFAULT_PATCH = 128
# Adam steps of a uniform LoRA before scoring: steadier and no worse than scores at
# initialisation over 3 seeds, 2 degradations and 2 backbones (docs/results.md); random
# scores read no model and take none
DEFAULT_SCORE_WARMUP = 100
