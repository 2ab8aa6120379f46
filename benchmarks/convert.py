"""Time and memory of `neox-ckpt` conversions on a synthetic ~1B-parameter LLaMA-shaped model.

Writes a random HF checkpoint (bf16, GQA, untied head, two safetensors shards with an index,
as `save_pretrained` lays them out) without ever holding it in memory, then runs, each in a
fresh process that reports its own wall time and peak RSS (VmHWM):

- `hf-to-neox --tp 1` and `--tp 2`,
- `reshard` TP 2 -> 4,
- `neox-to-hf` from TP 2 (merge),
- a baseline process that only imports torch, transformers and neox-ckpt (the fixed cost).

The table compares each peak with the largest file of the step's input and output ("largest
shard") and the whole model. Run: `uv run python benchmarks/convert.py [--layers 20]`.
Timings on a shared machine are noisy; run it on an idle one for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RUNNER = r"""
import json, sys, time
t0 = time.perf_counter()
from neox_ckpt.cli import main
import torch, transformers  # noqa: F401  (the baseline imports what conversions import)
argv = json.loads(sys.argv[1])
t1 = time.perf_counter()
rc = main(argv) if argv else 0
t2 = time.perf_counter()
# VmHWM is this process's own high-water mark; ru_maxrss would include the parent's peak,
# which Linux carries across fork+exec
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("RESULT " + json.dumps({"rc": rc, "import_s": t1 - t0, "run_s": t2 - t1,
      "peak_rss_kb": hwm}))
"""


def write_synthetic_hf(folder: Path, layers: int, hidden: int, vocab: int) -> int:
    """A random bf16 LLaMA checkpoint written tensor by tensor; returns its parameter count."""
    import torch
    import transformers

    from neox_ckpt.safetensors_stream import SafetensorsWriter

    heads, inter = hidden // 128, int(hidden * 2.75)
    kv = min(heads, max(heads // 4, 4))  # grouped-query, still divisible by TP 4
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    folder.mkdir(parents=True)
    config.to_json_file(str(folder / "config.json"))
    d = hidden // heads
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (heads * d, hidden)),
            (p + "self_attn.k_proj.weight", (kv * d, hidden)),
            (p + "self_attn.v_proj.weight", (kv * d, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, heads * d)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
        ]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    half = len(shapes) // 2
    files = {"model-00001-of-00002.safetensors": shapes[:half]}
    files["model-00002-of-00002.safetensors"] = shapes[half:]
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for fname, entries in files.items():
        w = SafetensorsWriter(
            folder / fname,
            [(n, torch.bfloat16, s) for n, s in entries],
            metadata={"format": "pt"},
        )
        for n, s in entries:
            w.write(n, (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16))
            weight_map[n] = fname
            total += torch.Size(s).numel()
        w.close()
    index = {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


def run(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(argv)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NEOX_CKPT_PROGRESS": "0"},
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{argv} failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if result["rc"]:
        raise SystemExit(f"{argv} returned {result['rc']}:\n{out.stderr}")
    return result


def _largest_file(*folders: Path) -> int:
    return max(p.stat().st_size for f in folders for p in f.rglob("*.safetensors"))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--workdir", help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        params = write_synthetic_hf(root / "hf", args.layers, args.hidden, args.vocab)
        print(
            f"synthetic model: {params / 1e9:.3f} B parameters, bf16, "
            f"{_size(root / 'hf') / 1e9:.2f} GB in 2 shards (written in "
            f"{time.perf_counter() - t:.1f} s)"
        )
        steps = [
            ("baseline (imports only)", [], [], None),
            (
                "hf-to-neox --tp 1",
                ["hf-to-neox", "--hf-model", str(root / "hf"), "--output-dir", str(root / "tp1")],
                [root / "hf"],
                root / "tp1",
            ),
            (
                "hf-to-neox --tp 2",
                [
                    "hf-to-neox",
                    "--hf-model",
                    str(root / "hf"),
                    "--output-dir",
                    str(root / "tp2"),
                    "--tp",
                    "2",
                ],
                [root / "hf"],
                root / "tp2",
            ),
            (
                "reshard tp 2 -> 4",
                ["reshard", str(root / "tp2"), "--output-dir", str(root / "tp4"), "--tp", "4"],
                [root / "tp2"],
                root / "tp4",
            ),
            (
                "neox-to-hf (from tp 2)",
                [
                    "neox-to-hf",
                    "--input-dir",
                    str(root / "tp2"),
                    "--output-dir",
                    str(root / "back"),
                    "--max-shard-size",
                    "1GB",
                ],
                [root / "tp2"],
                root / "back",
            ),
        ]
        rows = []
        for label, argv, inputs, output in steps:
            r = run(argv)
            largest = _largest_file(*inputs, *([output] if output else [])) if inputs else 0
            rows.append((label, r, largest))
        base = rows[0][1]["peak_rss_kb"] * 1024
        model_bytes = _size(root / "hf")
        print()
        print(
            f"{'step':<30} {'seconds':>8} {'peak RSS':>10} {'minus base':>11} "
            f"{'largest shard':>14} {'(minus base)/shard':>19} {'/model':>7}"
        )
        for label, r, largest in rows:
            rss = r["peak_rss_kb"] * 1024
            extra = rss - base
            ratio = f"{extra / largest:.2f}" if largest else "-"
            print(
                f"{label:<30} {r['run_s']:>8.1f} {rss / 1e9:>8.2f}GB {extra / 1e9:>9.2f}GB "
                f"{largest / 1e9 if largest else 0:>12.2f}GB {ratio:>19} "
                f"{extra / model_bytes:>7.2f}"
            )
        print(
            "\npeak RSS is VmHWM of each fresh process; 'minus base' removes the import-only "
            "baseline; seconds exclude imports. Shared CPU: timings are noisy."
        )


if __name__ == "__main__":
    main()
