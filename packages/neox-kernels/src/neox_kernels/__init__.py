"""neox-kernels: the compiled core of neox (dataset index builder, fused kernels)."""

from importlib.metadata import version as _version

__version__ = _version("neox-kernels")
