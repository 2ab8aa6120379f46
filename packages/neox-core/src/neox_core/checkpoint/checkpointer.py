"""Save and load checkpoints from every rank of a TP x DP (ZeRO/FSDP2) job, at any layout.

Save (collective): rank 0 names a shared `.tmp-global_step<N>-<pid>` directory; every rank
writes its own files there in parallel -- its optimizer chunk, its RNG state, and, on the
first data-parallel rank of each TP group, that TP rank's weights gathered over the DP
dimension -- and fsyncs them. Only after every rank has reported its files does rank 0 write
the manifest, rename the directory and move `latest`; a rank killed at any moment leaves
`latest` on the previous complete checkpoint.

Load (collective): every rank reads only the slices its local tensors need, from whatever
layout wrote the files (see `pieces.py`), so TP, DP and ZeRO stage may all differ from the
saving run; weights and optimizer state are both resharded.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from neox_core.checkpoint import layout
from neox_core.checkpoint.atomic import fsync_dir, remove_tree, write_json, write_text
from neox_core.checkpoint.errors import DamagedCheckpointError
from neox_core.checkpoint.integrity import VERIFY_MODES, file_problems
from neox_core.checkpoint.load import (
    CheckpointError,
    LoadedCheckpoint,
    _read_json,
    read_manifest,
    resolve_checkpoint_dir,
)
from neox_core.checkpoint.local_layout import (
    TP_DIM_NAME,
    LocalPiece,
    describe_local,
    is_dtensor,
    local_tensor,
)
from neox_core.checkpoint.optimizer_state import (
    SEPARATOR,
    _json_value,
    load_optimizer_from_tensors,
    optimizer_type,
)
from neox_core.checkpoint.pieces import PieceError, PieceIndex
from neox_core.checkpoint.retention import delete_old_checkpoints
from neox_core.checkpoint.rng import capture_rng_state, restore_rng_state
from neox_core.checkpoint.save import (
    _json_dump,
    _save_tensors,
    _unshared,
    publish_step_dir,
    write_shared_files,
)
from neox_core.checkpoint.sharding import fused_tp_blocks


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose parameter names are canonical: without DDP or torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _print_rank0(msg: str) -> None:
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(msg, flush=True)


class Checkpointer:
    """Collective save/load of one model + optimizer, for any mesh (see module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        mesh: Any = None,
        model_cfg: Any = None,
        device: torch.device | None = None,
        config: Mapping[str, Any] | None = None,
        config_files: Mapping[str, str] | None = None,
        keep_last_n: int | None = None,
        log: Callable[[str], None] = _print_rank0,
    ) -> None:
        self.model = unwrap_model(model)
        self.optimizer = optimizer
        self.device = device
        self.config = config
        self.config_files = config_files
        self.keep_last_n = keep_last_n
        self.log = log
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        names = tuple(getattr(mesh, "mesh_dim_names", None) or ()) if mesh is not None else ()
        if TP_DIM_NAME in names:
            self.tp_size, self.tp_rank = mesh.size(names.index("tp")), mesh.get_local_rank("tp")
        else:
            self.tp_size, self.tp_rank = 1, 0
        if "dp" in names:
            self.dp_size, self.dp_rank = mesh.size(names.index("dp")), mesh.get_local_rank("dp")
        else:
            self.dp_size, self.dp_rank = self.world // self.tp_size, self.rank // self.tp_size
        # pipeline parallelism: this rank holds the layers of its stage(s) only (pipeline.py)
        self.pp_size, self.pp_rank = 1, 0
        if "pp" in names:
            self.pp_size, self.pp_rank = mesh.size(names.index("pp")), mesh.get_local_rank("pp")
        state_names = set(self.model.state_dict().keys())
        # the last stage's copy of a tied embedding: the first stage saves it, both load it
        self.tied_copy = (
            {"embed.weight"}
            if self.pp_rank > 0
            and "embed.weight" in state_names
            and "lm_head.weight" not in state_names
            else set()
        )
        self.blocks: dict[str, tuple[int, ...]] = {}
        if model_cfg is not None:
            heads = model_cfg.num_attention_heads
            self.blocks = fused_tp_blocks(
                self.model.state_dict().keys(),
                num_heads=heads,
                num_kv_heads=model_cfg.num_kv_heads or heads,
                head_dim=model_cfg.hidden_size // heads,
                intermediate_size=model_cfg.intermediate_size or 0,
                gated_mlp=model_cfg.activation == "swiglu",
            )

    # -- where this rank's tensors sit ----------------------------------------------------

    def _describe(self, name: str, t: torch.Tensor) -> LocalPiece:
        return describe_local(
            name,
            t,
            tp_blocks=self.blocks.get(name),
            tp_size=self.tp_size,
            tp_rank=self.tp_rank,
            first_replica=self.dp_rank == 0 and self.tp_rank == 0,
            pp_stage=self.pp_rank,
            pp_size=self.pp_size,
        )

    def _param_names(self) -> dict[int, str]:
        return {id(p): n for n, p in self.model.named_parameters()}

    # -- collectives (no-ops on one process) ------------------------------------------------

    def _all_gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def _broadcast(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- save -------------------------------------------------------------------------------

    def save(
        self, save_dir: str | Path, iteration: int, trainer_state: Mapping[str, Any] | None = None
    ) -> Path:
        """Write `<save_dir>/global_step<iteration>/` from every rank; move `latest` to it."""
        start = time.perf_counter()
        root = Path(save_dir)
        final = root / layout.step_dir_name(iteration)
        tmp_name = None
        if self.rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            tmp_name = f".tmp-{final.name}-{os.getpid()}"
            remove_tree(root / tmp_name)
            (root / tmp_name).mkdir()
        tmp = root / self._broadcast(tmp_name)
        try:
            mine: dict[str, dict[str, Any]] | str = self._write_rank_files(tmp, iteration)
        except Exception as e:  # reported to rank 0, so no rank waits forever
            mine = f"rank {self.rank}: {type(e).__name__}: {e}"
        reports = self._all_gather(mine)  # every rank has fsynced its files by now
        failed = [r for r in reports if isinstance(r, str)]
        status: str | None = None
        if self.rank == 0:
            try:
                if failed:
                    raise CheckpointError("; ".join(failed))
                files: dict[str, dict[str, Any]] = {}
                for r in reports:
                    files.update(r)
                self._finish(root, tmp, final, iteration, trainer_state, files)
            except BaseException as e:
                remove_tree(tmp)
                status = f"{type(e).__name__}: {e}"
        status = self._broadcast(status)
        if status is not None:
            raise CheckpointError(f"saving {final} failed: {status}")
        seconds = time.perf_counter() - start
        self.log(f" > saved checkpoint {final} in {seconds:.2f} s ({self.world} rank(s) writing)")
        self.last_save_seconds = seconds
        return final

    def _write_rank_files(self, out: Path, iteration: int) -> dict[str, dict[str, Any]]:
        """This rank's files, each fsynced; their manifest records (size and content hash,
        taken while writing), which rank 0 gathers into the manifest."""
        files: dict[str, dict[str, Any]] = {}
        weights, records = self._tp_shard_weights()
        if weights is not None:
            name = layout.model_file(self.tp_rank, self.pp_rank)
            meta = layout.tensor_file_metadata(iteration, records)
            files[name] = _save_tensors(out / name, _unshared(weights), meta)
        if self.optimizer is not None:
            tensors, opt_records, meta_json = self._optimizer_chunks()
            tfile, jfile = layout.optimizer_files(self.tp_rank, self.pp_rank, self.dp_rank)
            opt_meta = layout.tensor_file_metadata(iteration, opt_records)
            files[tfile] = _save_tensors(out / tfile, tensors, opt_meta)
            files[jfile] = _json_dump(out / jfile, meta_json)
        rng_tensors, rng_meta = capture_rng_state(self.device)
        tfile, jfile = layout.rng_files(self.rank)
        files[tfile] = _save_tensors(
            out / tfile, rng_tensors, layout.tensor_file_metadata(iteration)
        )
        files[jfile] = _json_dump(out / jfile, rng_meta)
        return files

    def _tp_shard_weights(
        self,
    ) -> tuple[dict[str, torch.Tensor] | None, dict[str, dict[str, object]]]:
        """Each TP rank's full shard of every weight (gathered over dp); the first DP rank of
        each TP group keeps them. Every rank takes part: the gathers are collectives."""
        keep = self.dp_rank == 0
        weights: dict[str, torch.Tensor] = {}
        records: dict[str, dict[str, object]] = {}
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                piece = self._describe(name, t)
                shard = _gather_non_tp(t)
                if keep and name not in self.tied_copy:
                    weights[name] = shard.detach().to("cpu")
                    records[name] = piece.info.to_json()
        return (weights if keep else None), records

    def _optimizer_chunks(
        self,
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, object]], dict[str, Any]]:
        assert self.optimizer is not None
        names = self._param_names()
        tensors: dict[str, torch.Tensor] = {}
        records: dict[str, dict[str, object]] = {}
        scalars: dict[str, dict[str, Any]] = {}
        groups = []
        for group in self.optimizer.param_groups:
            hyper = {k: _json_value(v) for k, v in group.items() if k != "params"}
            group_names = []
            for p in group["params"]:
                if id(p) not in names:
                    raise ValueError("the optimizer holds a parameter that is not in the model")
                pname = names[id(p)]
                group_names.append(pname)
                if pname in self.tied_copy:
                    continue
                for key, value in self.optimizer.state.get(p, {}).items():
                    full_key = f"{pname}{SEPARATOR}{key}"
                    if not isinstance(value, torch.Tensor):
                        scalars.setdefault(pname, {})[key] = _json_value(value)
                    elif value.ndim == 0 and not is_dtensor(value):
                        tensors[full_key] = value.detach().to("cpu").clone()
                    else:
                        piece = self._describe(pname, value)
                        if piece.owner:
                            local = local_tensor(value).detach().to("cpu").contiguous()
                            tensors[full_key] = local.clone()
                            records[full_key] = piece.record()
            groups.append({"hyper": hyper, "params": group_names})
        meta = {
            "type": optimizer_type(self.optimizer),
            "param_groups": groups,
            "scalar_state": scalars,
        }
        return tensors, records, meta

    def _finish(
        self,
        root: Path,
        tmp: Path,
        final: Path,
        iteration: int,
        trainer_state: Mapping[str, Any] | None,
        files: dict[str, dict[str, Any]],
    ) -> None:
        """Rank 0, after every rank's files are durable: shared files, manifest, rename, latest."""
        files.update(write_shared_files(tmp, trainer_state, self.config, self.config_files))
        manifest = layout.manifest_record(
            iteration,
            parallel={
                "tensor_parallel_size": self.tp_size,
                "pipe_parallel_size": self.pp_size,
                "data_parallel_size": self.dp_size,
            },
            contents={
                "weights": True,
                "optimizer": self.optimizer is not None,
                "rng": True,
                "trainer_state": True,
            },
            files=dict(sorted(files.items())),
            versions={"neox_core_version": _version()},
        )
        write_json(tmp / layout.MANIFEST_FILE, manifest)
        fsync_dir(tmp)
        publish_step_dir(root, tmp, final)
        write_text(root / layout.LATEST_FILE, final.name + "\n")
        delete_old_checkpoints(root, self.keep_last_n)

    # -- load -------------------------------------------------------------------------------

    def load(
        self,
        load_dir: str | Path,
        iteration: int | None = None,
        *,
        weights_only: bool = False,
        restore_rng: bool = True,
        verify: str = "hash",
    ) -> LoadedCheckpoint:
        """Load into this rank's shards from a checkpoint written at any layout.

        `weights_only` (GPT-NeoX's `finetune`) returns iteration 0 and leaves the optimizer,
        RNG and trainer state alone. Before anything is read, every file is checked against
        the manifest: size and safetensors header always, content hash with `verify="hash"`
        (`checkpoint_verify`); a damaged file raises `DamagedCheckpointError` on every rank.
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        start = time.perf_counter()
        ckpt = resolve_checkpoint_dir(load_dir, iteration)
        manifest = read_manifest(ckpt)
        if verify == "hash":
            self._verify_hashes(ckpt, manifest)
        try:
            self._load_weights(ckpt)
            if not weights_only and self.optimizer is not None:
                if not manifest["contents"].get("optimizer"):
                    raise CheckpointError(f"{ckpt} holds no optimizer state; load it with finetune")
                self._load_optimizer(ckpt)
        except PieceError as e:
            raise CheckpointError(str(e)) from None
        loaded = LoadedCheckpoint(ckpt, int(manifest["iteration"]), manifest)
        if (ckpt / layout.CONFIG_FILE).is_file():
            loaded.config = _read_json(ckpt / layout.CONFIG_FILE)
        if weights_only:
            loaded.iteration = 0
        else:
            if restore_rng and manifest["contents"].get("rng"):
                self._restore_rng(ckpt)
            if (ckpt / layout.TRAINER_STATE_FILE).is_file():
                loaded.trainer_state = _read_json(ckpt / layout.TRAINER_STATE_FILE)
        seconds = time.perf_counter() - start
        saved = manifest.get("parallel", {})
        self.log(
            f" > loaded checkpoint {ckpt} in {seconds:.2f} s (saved at TP "
            f"{saved.get('tensor_parallel_size')} x DP {saved.get('data_parallel_size')}"
            f"{pp_text(saved.get('pipe_parallel_size', 1))}, loaded at TP {self.tp_size} x DP "
            f"{self.dp_size}{pp_text(self.pp_size)})"
        )
        self.last_load_seconds = seconds
        return loaded

    def _verify_hashes(self, ckpt: Path, manifest: dict[str, Any]) -> None:
        """Re-hash every file, the files split over the ranks; all ranks learn every problem."""
        names = sorted(manifest.get("files") or {})
        mine = file_problems(ckpt, manifest, hashes=True, only=names[self.rank :: self.world])
        problems = [p for report in self._all_gather(mine) for p in report]
        if problems:
            raise DamagedCheckpointError(ckpt, sorted(problems))

    def _load_weights(self, ckpt: Path) -> None:
        files = sorted(ckpt.glob("model_tp*_pp*.safetensors"))
        if not files:
            raise CheckpointError(f"{ckpt}: no model_tp*_pp*.safetensors files")
        index = PieceIndex(files)
        state = self.model.state_dict()
        missing = sorted(n for n in state if n not in index.pieces)
        unexpected = sorted(n for n in index.pieces if n not in state)
        if self.pp_size > 1:  # a pipeline stage holds some of the checkpoint's weights
            unexpected = []
        if missing or unexpected:
            raise CheckpointError(
                f"{ckpt}: weights do not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        for name in ("embed.weight", "lm_head.weight"):
            if name in state and index.full_shape(name)[0] != state[name].shape[0]:
                raise CheckpointError(
                    f"{ckpt}: {name} has {index.full_shape(name)[0]} rows (padded vocabulary), "
                    f"this model {state[name].shape[0]}: GPT-NeoX pads the vocabulary to a "
                    "multiple of make_vocab_size_divisible_by x model_parallel_size, so another "
                    "TP size can pad differently; set make_vocab_size_divisible_by so that both "
                    "layouts pad to the same size (padded rows take part in the softmax, so "
                    "they cannot be added or dropped without changing the loss)"
                )
        targets = dict(self.model.named_parameters())
        targets.update(self.model.named_buffers())
        with torch.no_grad():
            for name, t in state.items():
                dest = local_tensor(targets.get(name, t))
                piece = self._describe(name, t)
                buf = torch.empty(dest.shape, dtype=dest.dtype)
                index.read(name, piece.region(), tuple(t.shape), buf, str(ckpt))
                dest.copy_(buf)

    def _load_optimizer(self, ckpt: Path) -> None:
        assert self.optimizer is not None
        files = sorted(ckpt.glob("optimizer_tp*_pp*_dp*.safetensors"))
        if not files:
            raise CheckpointError(f"{ckpt}: no optimizer_*.safetensors files")
        index = PieceIndex(files)
        own_json = ckpt / layout.optimizer_files(self.tp_rank, self.pp_rank, self.dp_rank)[1]
        meta = _read_json(own_json if own_json.is_file() else files[0].with_suffix(".json"))
        names = self._param_names()
        if self.pp_size > 1 or any("_pp00_" not in f.name for f in files):
            meta = _pipeline_optimizer_meta(files, self.optimizer, names)
        tensors: dict[str, torch.Tensor] = {}
        by_param: dict[str, list[str]] = {}
        for key in index.names():
            pname, _, _ = key.rpartition(SEPARATOR)
            by_param.setdefault(pname, []).append(key)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                pname = names[id(p)]
                for key in sorted(by_param.get(pname, [])):
                    stored = index.pieces[key][0]
                    if stored.info.full_shape == ():
                        buf = torch.empty((), dtype=_dtype(stored.dtype))
                        index.read(key, stored.region, (), buf, str(ckpt))
                        tensors[key] = buf
                        continue
                    piece = self._describe(pname, p)
                    buf = torch.empty(piece.chunk_shape, dtype=_dtype(stored.dtype))
                    index.read(key, piece.region(), tuple(p.shape), buf, str(ckpt))
                    tensors[key] = _like_param(buf, p)
        try:
            load_optimizer_from_tensors(self.optimizer, names, tensors, meta, str(ckpt))
        except ValueError as e:
            raise CheckpointError(str(e)) from None

    def _restore_rng(self, ckpt: Path) -> None:
        tfile, jfile = layout.rng_files(self.rank)
        if not (ckpt / tfile).is_file():
            print(
                f"neox-train: rank {self.rank}: {ckpt} has no RNG state for this rank (saved "
                "by fewer ranks); it keeps its seeded RNG, so the run will not repeat bit for bit",
                file=sys.stderr,
                flush=True,
            )
            return
        from safetensors.torch import load_file

        restore_rng_state(load_file(str(ckpt / tfile)), _read_json(ckpt / jfile))


def pp_text(pp: int) -> str:
    return f" x PP {pp}" if pp and pp > 1 else ""


def _pipeline_optimizer_meta(
    files: list[Path], optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> dict[str, Any]:
    """The optimizer metadata for this rank's parameters when the saving or the loading run was
    pipelined: each stage's JSON lists its own parameters, so the groups are the union over all
    files, narrowed to (and ordered as) the parameters this rank holds."""
    metas = [_read_json(f.with_suffix(".json")) for f in files]
    meta = dict(metas[0])
    saved: list[set[str]] = [set() for _ in meta["param_groups"]]
    scalars: dict[str, Any] = {}
    for m in metas:
        for g, group in enumerate(m["param_groups"][: len(saved)]):
            saved[g].update(group["params"])
        scalars.update(m.get("scalar_state", {}))
    groups = []
    for g, group in enumerate(meta["param_groups"]):
        current = (
            [names[id(p)] for p in optimizer.param_groups[g]["params"]]
            if g < len(optimizer.param_groups)
            else []
        )
        # the rank's own names where the checkpoint has them (the loader reports the others)
        mine = [n for n in current if n in saved[g]]
        groups.append({"hyper": group["hyper"], "params": mine})
    meta["param_groups"] = groups
    meta["scalar_state"] = {n: v for n, v in scalars.items() if n in set(names.values())}
    return meta


def _gather_non_tp(t: torch.Tensor) -> torch.Tensor:
    """This rank's TP shard of `t`: a DTensor is made replicated on every mesh dim but "tp"."""
    if not is_dtensor(t):
        return t
    from torch.distributed.tensor import DTensor, Replicate

    mesh, placements = t.device_mesh, t.placements  # type: ignore[attr-defined]
    names = mesh.mesh_dim_names or ()
    want = [
        p if i < len(names) and names[i] == TP_DIM_NAME else Replicate()
        for i, p in enumerate(placements)
    ]
    if list(placements) == want:
        return t.to_local()  # type: ignore[attr-defined]
    local = t.to_local()  # type: ignore[attr-defined]
    if local.device.type != mesh.device_type:  # e.g. parameters offloaded to the CPU
        t = DTensor.from_local(
            local.to(mesh.device_type),
            mesh,
            placements,
            run_check=False,
            shape=t.shape,
            stride=t.stride(),
        )
    return t.redistribute(mesh, want).to_local()  # type: ignore[attr-defined]


def _like_param(local: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Optimizer state for `p`: a DTensor with `p`'s placements when `p` is one."""
    if not is_dtensor(p):
        return local.to(p.device)
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local.to(p.to_local().device),  # type: ignore[attr-defined]
        p.device_mesh,  # type: ignore[attr-defined]
        p.placements,  # type: ignore[attr-defined]
        run_check=False,
        shape=p.shape,
        stride=p.stride(),
    )


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
}


def _dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise CheckpointError(f"unsupported stored dtype {name}") from None


def _version() -> str:
    from neox_core import __version__

    return __version__
