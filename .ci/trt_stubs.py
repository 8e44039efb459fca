"""Copy the installed tensorrt-stubs into a folder mypy reads (`mypy_path`), repaired.

mypy reads stubs from site-packages only for packages marked typed (PEP 561), which these are
not, and the generated stubs hold two lines that are not valid Python (a parameter named `in`,
a required parameter after defaulted ones) in plugin and scale-layer APIs adaptsr never calls.
The copy fixes both; every other signature stays as published.
"""

import re
import shutil
import sys
import sysconfig
from pathlib import Path

target = Path(sys.argv[1])
site = Path(sysconfig.get_paths()["purelib"])
shutil.rmtree(target, ignore_errors=True)
for package in ("tensorrt", "tensorrt_bindings"):
    if not (site / package / "__init__.pyi").is_file():
        sys.exit(f"error: tensorrt-stubs is not installed in {site}")
    shutil.copytree(site / package, target / package)
stub = target / "tensorrt_bindings" / "tensorrt.pyi"
text = re.sub(r"([(,] *)in: ", r"\1in_: ", stub.read_text())
text = text.replace("channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer")
stub.write_text(text)
