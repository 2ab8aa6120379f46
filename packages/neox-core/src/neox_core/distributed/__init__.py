"""Parallelism on torch.distributed: layout (ParallelDims), DeviceMesh, TP, ZeRO/FSDP2.

Nothing here is imported at `neox-train --help`; modules that need torch import it themselves
(`parallel_dims` does not, so the config layer can validate a layout without torch).
"""
