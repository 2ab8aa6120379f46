"""neox-data: tokenizers and Megatron-compatible .bin/.idx datasets."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("neox-data")
except PackageNotFoundError:  # imported from a source tree that is not installed (GPU images)
    __version__ = "0+source"
