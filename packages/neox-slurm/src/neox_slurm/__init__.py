"""neox-slurm: SLURM submission, status and monitoring (no torch)."""

from importlib.metadata import version as _version

__version__ = _version("neox-slurm")
