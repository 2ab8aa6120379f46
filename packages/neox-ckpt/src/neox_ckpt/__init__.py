"""neox-ckpt: HF <-> neox checkpoint conversion and inspection."""

from importlib.metadata import version as _version

__version__ = _version("neox-ckpt")
