"""neox-data: tokenizers and Megatron-compatible .bin/.idx datasets."""

from importlib.metadata import version as _version

__version__ = _version("neox-data")
