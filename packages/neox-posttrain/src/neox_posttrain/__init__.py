"""neox-posttrain: SFT, DPO, KTO and reward modelling on top of neox-core."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("neox-posttrain")
except PackageNotFoundError:  # imported from a source tree that is not installed (GPU images)
    __version__ = "0+source"
