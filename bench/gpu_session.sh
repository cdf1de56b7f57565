#!/usr/bin/env bash
# One GPU session: the Triton kernels against Liger-Kernel (issue 14), the engine's throughput (issue 13), then the ResNet-18 CIFAR-10 sweep if the
# data set travelled. Results land in $OUT (the device tool's output folder) or bench/results/gpu.
#
# The device image has torch, torchvision, tqdm, scipy, matplotlib and scikit-learn but not tomli-w: before the
# call, in the repository root, fetch its wheel into an ignored folder and name that folder in the call's carry:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl tomli-w==1.2.0
# and, for the Triton kernels' comparison with Liger-Kernel (issue 14), its pure-Python wheel:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl liger-kernel==0.8.5
# The real CIFAR-10 (184 MB) exceeds one call's 64 MiB transfer, so the throughput benchmark uses synthetic
# CIFAR-shaped images; the sweep runs only where DATA holds CIFAR10/cifar10.npz.
set -euo pipefail
OUT=${OUT:-bench/results/gpu}
DATA=${DATA:-data}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 bench/bench_triton.py --out "$OUT" 2>&1 | tee "$OUT/triton.log"   # the Triton kernels vs Liger (~2 min)
python3 bench/bench_gpu_engine.py --out "$OUT" 2>&1 | tee "$OUT/bench.log"
if [ -f "$DATA/CIFAR10/cifar10.npz" ]; then
  python3 -m gdsoftmax sweep configs/cifar10_resnet18_gpu.toml --data-dir "$DATA" --out "$OUT/runs" --no-progress \
    2>&1 | tee "$OUT/sweep.log"
  python3 -m gdsoftmax report "$OUT/runs/cifar10_resnet18_gpu" --out "$OUT/report" 2>&1 | tail -1
fi
