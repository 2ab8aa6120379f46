#!/usr/bin/env bash
# Build neox-kernels on a GPU machine and run its checks, gpu tests and benchmark.
# Run from the repository root: bash packages/neox-kernels/tools/gpu_check.sh [--quick]
# Logs go to $OUT (default ./gpu-check-out). Wheels in .whl/ (Liger-Kernel; quack-kernels with
# nvidia-cutlass-dsl and its libs) are unpacked into /tmp/site and used when present.
# NEOX_KERNELS_CUDA_ARCHS (default 90a here, to build fast) picks the targets.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
QUICK=${1:-}
if ls .whl/*.whl >/dev/null 2>&1; then
  # unpacked, not `pip install --target`: pip keeps only one of several wheels that share a
  # top-level folder (nvidia-cutlass-dsl and its libs wheels), and it ignores .pth files there
  rm -rf /tmp/site && mkdir -p /tmp/site
  for wheel in .whl/*.whl; do python3 -m zipfile -e "$wheel" /tmp/site || echo "unpacking $wheel FAILED"; done
  # /tmp/site and what its .pth files add (cutlass-dsl's: its dsl_packages folder)
  extra=$(python3 -c "import site, sys; seen = set(sys.path); site.addsitedir('/tmp/site')
print(':'.join(p for p in sys.path if p not in seen))")
  export PYTHONPATH=${extra:-/tmp/site}${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
start=$SECONDS
NEOX_KERNELS_CUDA=ON NEOX_KERNELS_CUDA_ARCHS=${NEOX_KERNELS_CUDA_ARCHS:-90a} \
  python3 -m pip install -v --no-build-isolation --no-deps --no-cache-dir ./packages/neox-kernels \
  >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
echo "build: $((SECONDS - start)) s"
python3 -c "import json, neox_kernels.cli as c; print(json.dumps(c._build_info()['cuda']))"
neox-kernels self-check 2>&1 | tee "$OUT/self_check.txt" | tail -22
# neox-core's model tests with fusion use the sources directly (the image lacks the workspace)
export PYTHONPATH=$PWD/packages/neox-core/src:$PWD/packages/neox-data/src${PYTHONPATH:+:$PYTHONPATH}
tests=(tests/neox-kernels/test_fused_ops_gpu.py tests/neox-kernels/test_fused_adamw.py)
tests+=(tests/neox-core/models/test_fused_ops.py tests/neox-core/models/test_gpu.py)
tests+=(tests/neox-core/training/test_build_optimizer.py)
python3 -m pytest -q -p no:cacheprovider -m gpu "${tests[@]}" --timeout 300 2>&1 | tee "$OUT/pytest.txt" | tail -25
python3 benchmarks/kernels.py $QUICK --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt" | tail -40
