"""neox-core: config, models, training loop and checkpoint format."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("neox-core")
except PackageNotFoundError:  # imported from a source tree that is not installed (GPU images)
    __version__ = "0+source"
