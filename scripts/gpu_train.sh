#!/usr/bin/env bash
# Issue 7 on a lent GPU machine: synthesise a training set from the 18 SynthSeg label maps, fine-tune the three
# T1 + T2 direction networks from the shipped weights with the `paper` preset (all slices, no augmentation) and the
# L1 loss, and bring back one weights file.  The GPU machine has neither SimpleITK nor the label maps: first run
# `bash scripts/device_payload.sh --maps` here, then through the device tool:
#     command "bash scripts/gpu_train.sh", carry [".whl", ".device"], timeout_s 600.
# The three directions train at once on the one GPU, each stopped after the epoch that would overrun MINUTES;
# the script is sized for about 7.5 minutes (synthesis about 1, caching under 1, training MINUTES plus one
# epoch, combining seconds), and each stage runs under `timeout` within BUDGET_S (570 s) in all, so a call with
# timeout_s 600 always returns its files.  On an H100 (2026-11-27, BUDGET_S=540): synthesis 81 s, the 12 epochs of
# all three directions 373 s (12-21 s an epoch), 463 s in all.
#
# Settings (environment): PAIRS pairs per map (2), SEED of the synthesis (10), EPOCHS (12; the cosine schedule
# spans them), MINUTES per direction (5), LR (2e-4), INIT weights to start from (the shipped condnet-t1t2-A),
# MAPS (the label-map folder) and EXTRA (more `condnet train` options) for a small trial run on a CPU:
#     MAPS=DIR PAIRS=1 EPOCHS=1 EXTRA="--slices-per-epoch 8 --val-slices 4" bash scripts/gpu_train.sh
# Files in $OUT (else ./gpu_train_out): summary.md, build.log, train_<direction>.log, combine.log and
# condnet-t1t2-A-gpu.safetensors; judge the weights here with benchmarks/real_scan_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
maps=${MAPS:-.device/synthseg_label_maps}
out=${OUT:-gpu_train_out}
summary="$out/summary.md"
mkdir -p "$out"
[[ -d $maps ]] || { echo "gpu_train: no $maps; run scripts/device_payload.sh --maps and carry .device" | tee "$summary"; exit 1; }
source scripts/device_wheels.sh  # nibabel, jsonschema
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
pairs=${PAIRS:-2} seed=${SEED:-10} epochs=${EPOCHS:-12} minutes=${MINUTES:-5} lr=${LR:-2e-4}
deadline=$((SECONDS + ${BUDGET_S:-570}))
# cap S: S seconds, or what is left of the budget (at least 1)
cap() { local left=$((deadline - SECONDS)); ((left < $1)) && echo $((left > 1 ? left : 1)) || echo "$1"; }
init=${INIT:-Resources/weights/condnet-t1t2-A-cpu.safetensors}
work=$(mktemp -d)  # the training set, its cache and the run (under $TMPDIR when set)
data=$work/trainset run=$work/run
options=(--data "$data" --out "$run" --preset paper --loss l1 --epochs "$epochs" --lr "$lr" --lr-schedule cosine
         --val-slices 256 --seed "$seed" --init-weights "$init" --threads 4 --quiet)
# shellcheck disable=SC2206 # EXTRA holds further `condnet train` options, split on spaces
options+=(${EXTRA:-})
{
    echo "# gpu_train $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- $(nproc) CPUs; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -n 1)"
    echo "- PAIRS=$pairs SEED=$seed EPOCHS=$epochs MINUTES=$minutes LR=$lr INIT=$init MAPS=$maps EXTRA=${EXTRA:-}"
} | tee "$summary"

started=$SECONDS
timeout -k 10 "$(cap 240)" "$python" -m CondNetLogic build-training-set --labels-dir "$maps" --out "$data" \
    --pairs-per-map "$pairs" --seed "$seed" --deformation-mm 0 2.5 --workers 12 --no-preview --quiet \
    > "$out/build.log" 2>&1
rc=$?
echo "- training set: exit $rc, $((SECONDS - started)) s ($(tail -n 1 "$out/build.log"))" | tee -a "$summary"
((rc == 0)) || exit 1

started=$SECONDS
pids=()
for direction in axial sagittal coronal; do
    timeout -k 10 "$(cap $((minutes * 60 + 120)))" "$python" -m CondNetLogic train "${options[@]}" --directions "$direction" \
        --max-minutes "$minutes" > "$out/train_$direction.log" 2>&1 &
    pids+=($!)
done
status=0
for i in 0 1 2; do
    wait "${pids[$i]}" || status=1
done
for direction in axial sagittal coronal; do
    echo "- $(grep -E "^$direction: best validation loss" "$out/train_$direction.log" | tail -n 1 || echo "$direction: no result")" \
        | tee -a "$summary"
done
echo "- training: $((SECONDS - started)) s" | tee -a "$summary"
((status == 0)) || { echo "- a direction failed or ran out of time (see its log)" | tee -a "$summary"; exit 1; }

timeout -k 10 "$(cap 120)" "$python" -m CondNetLogic train "${options[@]}" --combine \
    --weights "$out/condnet-t1t2-A-gpu.safetensors" > "$out/combine.log" 2>&1
rc=$?
echo "- combined: exit $rc ($(tail -n 1 "$out/combine.log"))" | tee -a "$summary"
exit $rc
