#!/usr/bin/env bash
# The GPU checks of issues 3 and 4 in one run: the CUDA tests, the CondNet, coil-move and solver benchmarks.
#
# Sized for a lent device session: 3.5-4 minutes on an H100 once the machine has started (205 and 234 s on
# 2026-11-27, before the coil-move step was added; it is estimated at about 30 s), never more than
# GPU_CHECK_BUDGET_S (default 450 s) for the four steps: each runs under `timeout` (the tests at most 150 s, the
# CondNet benchmark 180 s, the coil move 120 s, the solver benchmark what is left), so a hung or slow step
# (torch.compile, say) cannot take the others' time.  Through the device tool: command
# "bash benchmarks/gpu_check.sh", carry [".whl"] (made by scripts/device_payload.sh: the coil-move step reads a
# coil file, which needs jsonschema), timeout_s 540 (the budget, plus the CUDA check, nvidia-smi and the version
# listing before it).  The device
# machine's python3 holds torch, numba, scipy, safetensors, matplotlib, tqdm and pytest; these steps need
# neither SimpleITK nor pyamg, which it lacks (the one test that writes NIfTI files skips itself there).
#
# On the device machine:  bash benchmarks/gpu_check.sh   (logs in $OUT, else ./gpu_check_out).
# Anywhere else with CUDA and the package's requirements installed, the same command.
#
# Files (seven, all written as the run goes, so a run cut short still returns what it measured):
#   summary.md           machine, GPU, versions, each step's outcome and time, and the rows for
#                        benchmarks/RESULTS.md from both benchmarks (printed again at the end of the output)
#   nvidia-smi.txt       nvidia-smi as found
#   pytest_gpu.log       the tests marked gpu
#   bench_inference.log, bench_inference.json   CondNet inference (first call and median of 3), training steps,
#                        and the --variants study (layout, precision, batch, CUDA graph, fused Adam)
#   bench_coil_move.log  one coil move end to end (primary field, potential on the GPU, E-field), per stage
#   bench_solver.log     the SPFD solver at 256^3 then 128^3, numba (CPU) and torch (CUDA, eager, then compiled:
#                        the first torch.compile comes after the 256^3 eager rows are written)
# GPU_CHECK_STEPS picks steps (default "tests inference coil solver"); with "tests coil solver" and
# GPU_CHECK_SOLVER_SIZES=256 the run leaves most of a lent session's 15 minutes to scripts/gpu_train.sh.
# Exit status 1 if a step failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check_out}
python=${PYTHON:-python3}
mkdir -p "$out"
summary="$out/summary.md"
: > "$summary"
# jsonschema for the coil file (carry ".whl")
source scripts/device_wheels.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-450}))

"$python" -c 'import sys, torch; torch.cuda.is_available() or sys.exit("gpu_check: torch sees no CUDA device"); print("torch", torch.__version__, torch.cuda.get_device_name(0))' || exit 1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

{
    commit=$(git rev-parse --short HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null || commit+=" + changes"; } \
        || commit="unknown (no git checkout)"
    echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo
    echo "- host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 2^20}' /proc/meminfo), $(uname -r)"
    echo "- nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>&1 | head -n 1)"
    "$python" - <<'EOF' 2>&1
import importlib
import platform
import sys

print(f"- python {platform.python_version()} ({sys.executable})")
found = []
for name in ("torch", "triton", "numpy", "scipy", "numba", "safetensors", "tqdm", "matplotlib", "pytest", "SimpleITK",
             "pyamg"):
    try:
        found.append(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as err:  # noqa: BLE001 - a missing or broken package is reported, not fatal
        found.append(f"{name} MISSING ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
print("- packages: " + ", ".join(found))
broken = []
for name in ("io", "phantom", "preprocessing", "network", "weights", "training", "inference", "solver",
             "solver.torch_backend"):
    try:
        importlib.import_module(f"CondNetLogic.{name}")
    except Exception as err:  # noqa: BLE001 - named here, so that a failing step below is understood at once
        broken.append(f"CondNetLogic.{name} ({type(err).__name__}: {err})")
print("- CondNetLogic modules of these checks: " + ("all import" if not broken else "BROKEN: " + "; ".join(broken)))
import torch

properties = torch.cuda.get_device_properties(0)
print(f"- GPU: {torch.cuda.get_device_name(0)}, {properties.total_memory / 2**30:.1f} GiB, "
      f"{properties.multi_processor_count} SMs, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
EOF
    echo
} | tee -a "$summary"

status=0

# step NAME CAP_S LOG COMMAND...: run COMMAND under timeout (CAP_S, or less when the budget is nearly spent),
# output to the screen and to $out/LOG, outcome and time to the summary.
step() {
    local name=$1 cap=$2 log=$3
    shift 3
    local left=$((deadline - SECONDS))
    ((left < cap)) && cap=$left
    if ((cap < 30)); then
        echo "- $name: NOT RUN (the ${GPU_CHECK_BUDGET_S:-450} s budget is spent)" | tee -a "$summary"
        status=1
        return
    fi
    echo "== $name (at most $cap s)"
    local started=$SECONDS
    timeout -k 10 "$cap" "$@" 2>&1 | tee "$out/$log"
    local rc=${PIPESTATUS[0]}
    local outcome="ok"
    if ((rc == 124 || rc == 137)); then
        outcome="TIMED OUT after $cap s (what it printed before is in $log)"
    elif ((rc != 0)); then
        outcome="FAILED (exit status $rc; see $log)"
    fi
    ((rc == 0)) || status=1
    echo "- $name: $outcome, $((SECONDS - started)) s" >> "$summary"
}

steps=" ${GPU_CHECK_STEPS:-tests inference coil solver} "
if [[ $steps == *" tests "* ]]; then
    step "pytest -m gpu" 150 pytest_gpu.log \
        "$python" -m pytest -q -m gpu -p no:cacheprovider -rfEs --continue-on-collection-errors \
        Testing/Python/test_torch_solver.py \
        Testing/Python/test_inference.py Testing/Python/test_training.py
    echo "  $(grep -E '(passed|failed|skipped|error)' "$out/pytest_gpu.log" | tail -n 1)" >> "$summary"
fi
if [[ $steps == *" inference "* ]]; then
    step "bench_inference.py" 180 bench_inference.log \
        "$python" benchmarks/bench_inference.py --devices cuda --repeat 3 --train-step --variants --profile \
        --json "$out/bench_inference.json" --markdown "$summary"
    grep -E '^ *(networks|training step) \| ' "$out/bench_inference.log" | sed 's/^/    /' >> "$summary"
fi
if [[ $steps == *" coil "* ]]; then
    step "bench_coil_move.py" 120 bench_coil_move.log \
        "$python" benchmarks/bench_coil_move.py --device cuda
    grep -E '^coil move on ' "$out/bench_coil_move.log" | sed 's/^/    /' >> "$summary"
fi
if [[ $steps == *" solver "* ]]; then
    # shellcheck disable=SC2086 # the sizes are separate arguments
    step "bench_solver.py" 600 bench_solver.log \
        "$python" benchmarks/bench_solver.py --sizes ${GPU_CHECK_SOLVER_SIZES:-256 128} --skip scipy-cg pyamg \
        --profile --markdown "$summary"
    grep -E 'steps of the median solve' "$out/bench_solver.log" | sed 's/^/    /' >> "$summary"
fi

echo
echo "==================== summary ($summary) ===================="
cat "$summary"
exit $status
