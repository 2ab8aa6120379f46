"""What the content hashes of checkpoint format v3 cost: save and load with and without them.

One process on the CPU: build a Pythia-shaped model (fp32 weights, and AdamW state unless it
would not fit in memory), save it with `Checkpointer` (xxh3_64 hashed while writing) and with
the hash replaced by a no-op, then load it with `verify="hash"` and `verify="size"`. Prints a
table: seconds and the difference as % of the save (or load) time without hashes.

    uv run python benchmarks/checkpoint_checksum.py                  # pythia-1B, /tmp
    uv run python benchmarks/checkpoint_checksum.py --shape pythia-410M --dir /scratch/x
    uv run python benchmarks/checkpoint_checksum.py --weights-only
    uv run python benchmarks/checkpoint_checksum.py --dir /dev/shm/ckpt   # no disk noise

"Without hashes" patches the hasher of `neox_core.checkpoint.hashing` with one that does
nothing; the bytes written are the same. Files stay in the page cache between save and load
(a loaded machine's numbers vary: each is the best of `--repeat` alternating rounds; on a
shared disk, `--dir /dev/shm/...` measures the hashing rather than the disk).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

SHAPES = {  # name -> ModelConfig fields
    "pythia-160M": dict(num_layers=12, hidden_size=768, num_attention_heads=12),
    "pythia-410M": dict(num_layers=24, hidden_size=1024, num_attention_heads=16),
    "pythia-1B": dict(num_layers=16, hidden_size=2048, num_attention_heads=8),
}


class _NoHash:
    def update(self, data: object) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 16


def _best(times: dict[str, float], key: str, seconds: float) -> None:
    times[key] = min(seconds, times.get(key, seconds))


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _model_cfg(shape: str):
    from neox_core.config.schema import ModelConfig

    return ModelConfig(
        vocab_size=50277, padded_vocab_size=50304, max_position_embeddings=2048,
        rotary_pct=0.25, gpt_j_residual=True, tie_embeddings=False,
        intermediate_size=4 * SHAPES[shape]["hidden_size"], **SHAPES[shape],
    )  # fmt: skip


def _count(shape: str) -> int:
    from neox_core.models import build_model

    model = build_model(_model_cfg(shape), seed=None, device="meta")
    return sum(p.numel() for p in model.parameters())


def _build(shape: str, with_optimizer: bool):
    import torch

    from neox_core.models import build_model

    cfg = _model_cfg(shape)
    model = build_model(cfg, seed=0, device="cpu")
    opt = None
    if with_optimizer:  # AdamW state as after a step, without gradients' memory
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for p in model.parameters():
            opt.state[p] = {
                "step": torch.tensor(1.0),
                "exp_avg": torch.randn_like(p) * 1e-3,
                "exp_avg_sq": torch.rand_like(p) * 1e-6,
            }
    return cfg, model, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="pythia-1B")
    ap.add_argument("--weights-only", action="store_true", help="no optimizer state")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best time is kept")
    ap.add_argument("--dir", default=None, help="where to write, removed after (default: /tmp)")
    args = ap.parse_args()

    import neox_core.checkpoint.hashing as hashing
    from neox_core.checkpoint import Checkpointer

    with_opt = not args.weights_only
    n = _count(args.shape)
    # saving clones each optimizer chunk, loading holds the stored moments next to the live
    # ones: about 5 copies of the parameters with AdamW, 2 without
    need = n * 4 * (5 if with_opt else 2)
    note = ""
    if with_opt and need > 0.8 * _mem_available():
        with_opt = False
        note = (
            f" (AdamW state left out: ~{need / 2**30:.0f} GiB needed, "
            f"{_mem_available() / 2**30:.0f} GiB available)"
        )
    cfg, model, opt = _build(args.shape, with_opt)
    root = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-checksum-"))
    real = hashing.xxhash.xxh3_64
    rows = []
    try:
        ck = Checkpointer(model, opt, model_cfg=cfg, log=lambda _: None)
        times: dict[str, float] = {}
        modes = [("off", _NoHash, "size"), ("on", real, "hash")]
        for r in range(args.repeat):  # alternate the order, keep the best: disks are noisy
            for label, hasher, verify in modes if r % 2 == 0 else modes[::-1]:
                hashing.xxhash.xxh3_64 = hasher
                t = time.perf_counter()
                step = ck.save(root / label, 1)
                _best(times, f"save {label}", time.perf_counter() - t)
                hashing.xxhash.xxh3_64 = real
                t = time.perf_counter()
                ck.load(root / label, verify=verify)
                _best(times, f"load {label}", time.perf_counter() - t)
                if (label == "off") == (r % 2 == 0):  # one checkpoint at a time (RAM disks)
                    shutil.rmtree(root / label)
        step = root / "on" / step.name
        size = sum(f.stat().st_size for f in step.rglob("*") if f.is_file())
        t = time.perf_counter()  # the work hashing adds to a save: xxh3 over the tensors
        tensors = list(model.state_dict().values())
        if opt is not None:
            tensors += [v for st in opt.state.values() for v in st.values()]
        for x in tensors:
            hashing.xxhash.xxh3_64(hashing._tensor_bytes(x)).hexdigest()
        in_memory = time.perf_counter() - t
        t = time.perf_counter()
        for f in step.rglob("*.safetensors"):
            hashing.hash_file(f)
        rehash = time.perf_counter() - t
        for what in ("save", "load"):
            off, on = times[f"{what} off"], times[f"{what} on"]
            rows.append((what, off, on, on - off, 100 * (on - off) / off))
    finally:
        hashing.xxhash.xxh3_64 = real
        shutil.rmtree(root, ignore_errors=True)
    contents = "fp32 weights + AdamW state" if with_opt else "fp32 weights only"
    print(f"{args.shape}: {n / 1e9:.2f}B parameters, {contents}{note}, {size / 1e9:.2f} GB "
          f"checkpoint, CPU, {root}")  # fmt: skip
    print(f"| {'':4} | hashes off (s) | hashes on (s) | cost (s) | cost (% of off) |")
    print("|------|---------------:|--------------:|---------:|----------------:|")
    for what, off, on, d, pct in rows:
        print(f"| {what} | {off:14.2f} | {on:13.2f} | {d:8.2f} | {pct:14.1f}% |")
    print(f"xxh3_64 over the same tensors in memory (what hashing adds to a save): "
          f"{in_memory:.2f} s ({size / 1e9 / in_memory:.1f} GB/s)")  # fmt: skip
    print(f"re-hashing the tensor files from the page cache alone: {rehash:.2f} s "
          f"({size / 1e9 / rehash:.1f} GB/s)")  # fmt: skip


if __name__ == "__main__":
    main()
