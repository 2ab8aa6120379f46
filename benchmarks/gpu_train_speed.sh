#!/usr/bin/env bash
# neox-train's speed on one GPU (issue 15): the benchmark table (neox-train's own step beside
# HF transformers compiled, + a profile of Pythia-1B), then a real `neox-train` run of a
# Pythia-1B-shaped config on synthetic tokens whose log line shows the MFU.
#
#   bash benchmarks/gpu_train_speed.sh     # from the repository root; at most about 8 minutes
#
# Needs torch (CUDA), transformers, pyyaml, numpy, pybind11 and scikit-build-core; no uv.
# neox-kernels' dataset index (C++) is built into /tmp/neox-site for the neox-train run (its
# CUDA kernels are not: the model then runs its PyTorch code, compiled). Logs go to $OUT
# (default ./gpu-train-speed-out). A failing part is reported and the others still run.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-train-speed-out}
SITE=/tmp/neox-site
DATA=/tmp/neox-speed-data  # synthetic tokens and the run's config (kept out of $OUT)
mkdir -p "$OUT" "$DATA"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/packages/neox-core/src:$PWD/packages/neox-data/src:$PWD/packages/neox-kernels/src
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/neox-inductor-cache}
start=$SECONDS
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# 1. the dataset index extension, in the background while the benchmark runs
( NEOX_KERNELS_CUDA=OFF python3 -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
    --target "$SITE" ./packages/neox-kernels >"$OUT/kernels_build.log" 2>&1 \
  && echo "neox-kernels index built" || echo "neox-kernels build FAILED (see kernels_build.log)" ) &
build_pid=$!

# 2. the table: each case in its own process (a crash or OOM costs one row), all within 330 s
#    so that the neox-train run below keeps its time
echo "== benchmark (neox-train's step vs HF compiled) =="
python3 benchmarks/train_step.py --isolate --profile --case-timeout 150 --deadline-s 330 \
  2>&1 | tee "$OUT/train_step.txt" | grep -v "^RESULT "
echo "benchmark done at $((SECONDS - start)) s"

# 3. a real neox-train run: Pythia-1B-shaped, bf16, micro batch 8, seq 2048, 30 iterations
wait $build_pid
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
PYTHONPATH=$SITE:$PYTHONPATH timeout 120 python3 -c \
  'import sys; from neox_core.cli import main; sys.exit(main(sys.argv[1:]))' \
  examples/configs/pythia/1B.yml "$DATA/run.yml" 2>&1 | tee "$OUT/neox_train.txt" | tail -14
echo "neox-train exit ${PIPESTATUS[0]}; total $((SECONDS - start)) s"
echo "== summary =="
sed -n '/^model | impl/,$p' "$OUT/train_step.txt"
grep -E "iteration +30/" "$OUT/neox_train.txt" || echo "(no iteration-30 log line)"
