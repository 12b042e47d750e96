#!/usr/bin/env bash
# The GPU checks of issues 3 and 4 in one run: the CUDA tests, the solver and CondNet benchmarks.
#
# Sized for a lent device session (a few minutes on an H100 after the machine starts).  Its python3 holds
# torch, numba, scipy, safetensors, matplotlib and tqdm; these steps need neither SimpleITK nor pyamg, which
# it lacks.  On the device machine:  bash benchmarks/gpu_check.sh   (logs in $OUT, else ./gpu_check_out).
# Anywhere else with CUDA and the package installed, the same command.  Exit status 1 if a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check_out}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$python" -c 'import sys, torch; torch.cuda.is_available() or sys.exit("gpu_check: torch sees no CUDA device"); print("torch", torch.__version__, torch.cuda.get_device_name(0))' || exit 1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

status=0
"$python" -m pytest -q -m gpu -p no:cacheprovider -rs Testing/Python/test_torch_solver.py \
    Testing/Python/test_inference.py Testing/Python/test_training.py 2>&1 | tee "$out/pytest_gpu.log" || status=1
"$python" benchmarks/bench_solver.py --sizes 128 256 --skip scipy-cg pyamg 2>&1 | tee "$out/bench_solver.log" || status=1
"$python" benchmarks/bench_inference.py --train-step --json "$out/bench_inference.json" 2>&1 \
    | tee "$out/bench_inference.log" || status=1
exit $status
