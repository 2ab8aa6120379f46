"""neox-posttrain: SFT, DPO, KTO and reward modelling on top of neox-core."""

from importlib.metadata import version as _version

__version__ = _version("neox-posttrain")
