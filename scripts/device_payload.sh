#!/usr/bin/env bash
# Prepare what a lent GPU machine lacks, in two folders that git ignores (run here, where pip reaches PyPI):
#   .whl/     wheels for the device's Python 3.12: nibabel (NIfTI without SimpleITK, which is too large to
#             carry) and jsonschema with its dependencies (coil files); attrs and typing-extensions are there.
#   .device/  the 18 SynthSeg label maps and their mapping from ../shared (with --maps), for
#             scripts/gpu_train.sh; they are carried to the device, never committed.
# Then pass carry [".whl"] to the device tool for benchmarks/gpu_check.sh, [".whl", ".device"] for
# scripts/gpu_train.sh.  Everything that travels must stay under 64 MiB: the tracked files (about 26 MB), the
# wheels (about 4 MB) and the maps (29 MB); the total is printed at the end.
#
# Usage: bash scripts/device_payload.sh [--maps [DIR]]   (DIR default ../shared/data/synthseg_label_maps)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
exclude=.git/info/exclude
mkdir -p "$(dirname "$exclude")"
for folder in /.whl/ /.device/; do
    grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"
done

rm -rf .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    nibabel==5.4.2 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py
ls -la .whl

if [[ ${1:-} == --maps ]]; then
    source_dir=${2:-../shared/data/synthseg_label_maps}
    [[ -d $source_dir ]] || { echo "device_payload: no folder $source_dir" >&2; exit 1; }
    rm -rf .device
    mkdir -p .device/synthseg_label_maps
    cp "$source_dir"/*.nii.gz "$source_dir"/labels_to_tissue.csv .device/synthseg_label_maps/
    echo "copied $(ls .device/synthseg_label_maps/*.nii.gz | wc -l) label maps into .device/synthseg_label_maps"
fi

tracked=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb | tail -n 1 | cut -f1)
carried=$(du -cb .whl $( [[ -d .device ]] && echo .device ) | tail -n 1 | cut -f1)
total=$((tracked + ${untracked:-0} + carried))
echo "would travel: $((total / 1000000)) MB of 67 MB (tracked $((tracked / 1000000)), untracked not ignored" \
     "$((${untracked:-0} / 1000000)), carried $((carried / 1000000)))"
((total < 64 * 1024 * 1024)) || { echo "device_payload: over the device tool's 64 MiB" >&2; exit 1; }
