"""GPT-NeoX's `.npy` index cache: built once (by one rank), then memory-mapped by everyone.

Files are named as GPT-NeoX names them, next to the data, so caches are shared with it.
Each array is written to a temporary name and renamed, so a crash never leaves a torn
cache that a later run would trust.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neox_kernels.index import IndexMaps, build_index_maps, index_map_paths


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_or_build_index(
    *,
    data_prefix: str,
    name: str,
    documents: np.ndarray,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    pack_impl: str,
    allow_chopped: bool,
    skip: Callable[[], np.ndarray | None] | None = None,
    build: bool = True,
    barrier: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> IndexMaps:
    """The index maps of one dataset, from the cache or freshly built and cached.

    `build` is true on the rank that builds (rank 0); `barrier` makes the others wait for
    it. `skip` computes the documents to leave out (only called when building).
    """
    paths = {
        k: Path(v)
        for k, v in index_map_paths(
            data_prefix,
            name,
            num_samples,
            seq_length,
            seed,
            pack_impl,
            allow_chopped,  # type: ignore[arg-type]
        ).items()
    }
    if build and not all(p.is_file() for p in paths.values()):
        log(
            f" > building {pack_impl} index maps for {name} ({num_samples} samples) in "
            f"{paths['doc'].parent}"
        )
        maps = build_index_maps(
            pack_impl,  # type: ignore[arg-type]
            documents,
            sizes,
            num_samples,
            seq_length,
            seed,
            allow_chopped,
            skip() if skip is not None else None,
        )
        _save_npy(paths["doc"], maps.doc_idx)
        _save_npy(paths["sample"], maps.sample_idx)
        _save_npy(paths["shuffle"], maps.shuffle_idx)
    if barrier is not None:
        barrier()
    return load_index(pack_impl, {k: str(p) for k, p in paths.items()})


def load_index(pack_impl: str, paths: dict[str, str]) -> IndexMaps:
    """Memory-map the cached doc/sample/shuffle arrays named in `paths`."""
    missing = [p for p in paths.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"index cache files missing: {missing}")
    arrays = {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in paths.items()}
    return IndexMaps(pack_impl, arrays["doc"], arrays["sample"], arrays["shuffle"], None)
