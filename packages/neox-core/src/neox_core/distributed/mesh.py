"""The DeviceMesh the parallel code runs on: ("dp", "tp"), TP innermost; ("pp", "dp", "tp") with
pipeline parallelism (PP outermost: global rank = (pp_rank * dp + dp_rank) * tp + tp_rank, so
a stage's TP x DP ranks are neighbours and only activations cross stage boundaries).

TP is the inner dimension so the ranks of one tensor-parallel group are neighbours (the same
node, NVLink), as Megatron and GPT-NeoX place them: global rank = dp_rank * tp + tp_rank.
Both dimensions always exist (size 1 when unused), so `mesh["dp"]` and `mesh["tp"]` can be
asked for without checking the layout first.
"""

from __future__ import annotations

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from neox_core.distributed.parallel_dims import ParallelDims

MESH_DIMS = ("dp", "tp")
PP_MESH_DIMS = ("pp", "dp", "tp")


def build_mesh(dims: ParallelDims, device_type: str) -> DeviceMesh:
    """A 2-D mesh (3-D with PP > 1) over the default group; `device_type` is "cuda" or "cpu"."""
    if dims.pp > 1:
        return init_device_mesh(
            device_type, (dims.pp, dims.dp, dims.tp), mesh_dim_names=PP_MESH_DIMS
        )
    return init_device_mesh(device_type, (dims.dp, dims.tp), mesh_dim_names=MESH_DIMS)


def dp_rank_and_size(mesh: DeviceMesh) -> tuple[int, int]:
    """This rank's data-parallel index and the data-parallel size: which batch slice it reads.

    The ranks of one TP group share a dp index, so they read the same samples.
    """
    dp = mesh["dp"]
    return dp.get_local_rank(), dp.size()
