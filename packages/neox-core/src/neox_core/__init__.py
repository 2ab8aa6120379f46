"""neox-core: config, models, training loop and checkpoint format."""

from importlib.metadata import version as _version

__version__ = _version("neox-core")
