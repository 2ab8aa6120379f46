"""neox-ckpt: HF <-> neox checkpoint conversion and inspection."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("neox-ckpt")
except PackageNotFoundError:  # imported from a source tree that is not installed (GPU images)
    __version__ = "0+source"
