#!/usr/bin/env bash
# neox-train's speed on one GPU (issue 15): the benchmark table (neox-train's own step beside
# HF transformers compiled, + a profile of Pythia-1B), then a real `neox-train` run of a
# Pythia-1B-shaped config on synthetic tokens whose log line shows the MFU.
#
#   bash benchmarks/gpu_train_speed.sh     # from the repository root
#   CASES=410M,1B-16k TABLE_DEADLINE_S=330 bash benchmarks/gpu_train_speed.sh
#
# CASES: the table's cases (default all: 1B,llama-1.1B,410M,1B-16k), each beside HF.
# TABLE_DEADLINE_S: start no case after this many seconds of the table and cut those running
# (default 0: none). On an H100 (2026-12-06) the first three cases, neox and HF, and the 1B
# profile took 330 s (HF's compilation about 60 s a case), the build 35 s, the neox-train run
# 56 s: the whole table does not fit a 10-minute limit, two calls with CASES split do.
# Needs torch (CUDA), transformers, pyyaml, numpy, pybind11, scikit-build-core and nvcc; no uv.
# neox-kernels is built with its CUDA kernels (the fused ops the step uses, and the dataset
# index) into /tmp/neox-site, for NEOX_KERNELS_CUDA_ARCHS (default 90a: Hopper; about 25 s on
# 16 cores); if that build fails, the model runs its PyTorch code and the table says less.
# FlashAttention-4 is a candidate of `attention_kernel: auto` where it imports: installed, or
# unpacked into /tmp/site (packages/neox-kernels/tools/gpu_check.sh does that from .whl/),
# which is then added to the path. Logs go to $OUT (default ./gpu-train-speed-out). A failing
# part is reported and the others still run.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-train-speed-out}
SITE=/tmp/neox-site
DATA=/tmp/neox-speed-data  # synthetic tokens and the run's config (kept out of $OUT)
mkdir -p "$OUT" "$DATA"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$SITE:$PWD/packages/neox-core/src:$PWD/packages/neox-data/src:$PWD/packages/neox-kernels/src
if [ -d /tmp/site ]; then  # and what its .pth files add (cutlass-dsl's dsl_packages folder)
  extra=$(python3 -c "import site, sys; seen = set(sys.path); site.addsitedir('/tmp/site')
print(':'.join(p for p in sys.path if p not in seen))")
  export PYTHONPATH=$PYTHONPATH:${extra:-/tmp/site}
fi
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/neox-inductor-cache}
start=$SECONDS
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# 1. neox-kernels with its CUDA kernels, before the benchmark (whose step uses them)
rm -rf "$SITE"
NEOX_KERNELS_CUDA=ON NEOX_KERNELS_CUDA_ARCHS=${NEOX_KERNELS_CUDA_ARCHS:-90a} python3 -m pip install \
  -q --no-build-isolation --no-deps --no-cache-dir --target "$SITE" ./packages/neox-kernels \
  >"$OUT/kernels_build.log" 2>&1 && echo "neox-kernels built in $((SECONDS - start)) s" \
  || echo "neox-kernels build FAILED (see kernels_build.log): the step runs without fused kernels"
python3 -c "import torch
from neox_kernels.ops import cuda_available
from neox_core.models.flash_attention4 import unavailable_reason
print('fused CUDA kernels:', cuda_available())
print('FlashAttention-4 at head dim 64:', unavailable_reason(torch.device('cuda'), 64) or 'can run')"

# 2. the table: each case in its own process (a crash or OOM costs one row)
echo "== benchmark (neox-train's step vs HF compiled) =="
python3 benchmarks/train_step.py --isolate --profile --verbose --case-timeout 150 \
  --cases "${CASES:-1B,llama-1.1B,410M,1B-16k}" --deadline-s "${TABLE_DEADLINE_S:-0}" \
  2>&1 | tee "$OUT/train_step.txt" | grep -v "^RESULT "
echo "benchmark done at $((SECONDS - start)) s"

# 3. a real neox-train run: Pythia-1B-shaped, bf16, micro batch 8, seq 2048, 30 iterations
echo "== neox-train, Pythia-1B shape, 30 iterations =="
python3 - "$DATA" <<'EOF' || echo "synthetic data FAILED"
import sys
from pathlib import Path

import numpy as np

from neox_data.indexed_dataset import write_dataset

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
docs = [rng.integers(0, 50277, int(n), dtype=np.uint16) for n in rng.integers(200, 4000, 1500)]
write_dataset(out / "synthetic_text_document", docs, np.uint16)
(out / "run.yml").write_text(
    f"""{{
  "data_path": "{out / 'synthetic_text_document'}",
  "split": "100,0,0",
  "vocab_size": 50277,
  "num_workers": 2,
  "fp16": {{"enabled": false}},
  "bf16": {{"enabled": true}},
  "train_micro_batch_size_per_gpu": 8,
  "checkpoint_activations": false,
  "train_iters": 30,
  "lr_decay_iters": 30,
  "log_interval": 10,
  "eval_interval": 1000,
  "eval_iters": 0,
  "extra_save_iters": null,
}}
"""
)
print("synthetic data:", sum(len(d) for d in docs), "tokens")
EOF
timeout 120 python3 -c \
  'import sys; from neox_core.cli import main; sys.exit(main(sys.argv[1:]))' \
  examples/configs/pythia/1B.yml "$DATA/run.yml" 2>&1 | tee "$OUT/neox_train.txt" | tail -14
echo "neox-train exit ${PIPESTATUS[0]}; total $((SECONDS - start)) s"
echo "== summary =="
sed -n '/^model | impl/,$p' "$OUT/train_step.txt"
grep -E "^ *> attention:" "$OUT/train_step.txt" | sort -u | cut -c1-300
grep -E "iteration +30/" "$OUT/neox_train.txt" || echo "(no iteration-30 log line)"
