"""Where a tissue's predicted conductivity falls short: by image brightness and by distance from the brain.

Issue 7's MNI152 check misses CSF and vitreous humor (a mean below the target over all voxels of the SAMSEG
label).  This script splits such a label's voxels two ways and gives the mean predicted conductivity (S/m) of
each part:

* **by image brightness**: the image (a T2w scan, say) scaled so that its 0.5th and 99.5th percentiles over the
  labelled head map to 0 and 1 (clipped), as ``Resources/mri_priors.json`` measures tissue contrast; the bins
  are 0.2 wide.  A CSF voxel that is no brighter than grey matter on T2w holds mostly tissue, whatever its label;
* **by distance from the brain** (GM, WM and cerebellum of the same label map), in mm between voxel centres:
  the thin layers (subarachnoid CSF) lie within a voxel or two of it.

The prediction, the image and the label map must share one grid (``condnet predict`` writes the conductivity on
its T1's grid; pass that T1, or a T2 on the same grid).  Prints a markdown report; ``--json`` also writes the
numbers.  Example (MNI152, the shipped weights)::

    condnet predict --t1 MNI152_T1_2mm.nii.gz --t2 MNI152_T2_2mm.nii.gz --out /tmp/pv/sigma.nii.gz
    python benchmarks/partial_volume_check.py --prediction /tmp/pv/sigma.nii.gz --image MNI152_T2_2mm.nii.gz \
        --labels samseg/seg.nii.gz --mapping samseg
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from CondNetLogic.conductivity import TISSUE_INDEX, label_mapping_path, labels_to_tissues, read_label_mapping  # noqa: E402

#: Upper edges of the brightness bins (the last one includes 1.0).
BRIGHTNESS_EDGES = (0.2, 0.4, 0.6, 0.8, 1.0)
#: Upper edges (mm) of the distance-from-brain bins; the last bin is open.
DISTANCE_EDGES_MM = (2.0, 4.0, 8.0)
BRAIN = ("gm", "wm", "cerebellum")


def scaled_brightness(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """``image`` scaled so its 0.5th / 99.5th percentiles over ``head`` become 0 / 1, clipped to [0, 1]."""
    low, high = np.percentile(image[head], [0.5, 99.5])
    if not high > low:
        raise ValueError("the image is constant over the head: no brightness to bin")
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index per value: ``i`` for ``edges[i-1] <= v < edges[i]``, ``len(edges)`` from the last edge on."""
    return np.searchsorted(np.asarray(edges), values, side="right")


def _rows(prediction: np.ndarray, brightness: np.ndarray, index: np.ndarray, names: Sequence[str]) -> list:
    rows = []
    for i, name in enumerate(names):
        selected = index == i
        count = int(selected.sum())
        rows.append({"bin": name, "voxels": count,
                     "mean_conductivity": float(prediction[selected].mean()) if count else None,
                     "mean_brightness": float(brightness[selected].mean()) if count else None})
    return rows


def breakdown(prediction: np.ndarray, image: np.ndarray, tissues: np.ndarray, spacing_mm: Sequence[float],
              groups: Sequence[str]) -> Dict[str, dict]:
    """Mean prediction (S/m) of each tissue in ``groups`` by brightness bin and by distance-from-brain bin.

    Parameters
    ----------
    prediction, image : ndarray (I, J, K)
        Conductivity (S/m) and an MRI image on the grid of ``tissues``.
    tissues : ndarray (I, J, K)
        Tissue indices (:data:`CondNetLogic.conductivity.TISSUES`, 0 = air).
    spacing_mm : (3,)
        Voxel size (mm), for the distances.
    groups : sequence of str
        Tissue names to split (e.g. ``("csf", "vitreous_humor")``).

    Returns
    -------
    dict
        ``{"reference": {tissue: mean brightness}, tissue: {"voxels", "mean_conductivity", "by_brightness":
        rows, "by_distance_mm": rows}}``, each row ``{"bin", "voxels", "mean_conductivity", "mean_brightness"}``.
    """
    from scipy import ndimage

    head = tissues > 0
    brightness = scaled_brightness(np.asarray(image, dtype=np.float64), head)
    brain = np.isin(tissues, [TISSUE_INDEX[name] for name in BRAIN])
    if not brain.any():
        raise ValueError("the label map holds no brain voxel (GM, WM or cerebellum): no distance to measure")
    distance = ndimage.distance_transform_edt(~brain, sampling=[float(s) for s in spacing_mm])
    brightness_names = [f"{low:.1f}-{high:.1f}" for low, high in zip((0.0,) + BRIGHTNESS_EDGES, BRIGHTNESS_EDGES)]
    distance_names = [f"<= {DISTANCE_EDGES_MM[0]:g}"] + [
        f"{low:g}-{high:g}" for low, high in zip(DISTANCE_EDGES_MM, DISTANCE_EDGES_MM[1:])
    ] + [f"> {DISTANCE_EDGES_MM[-1]:g}"]
    report: Dict[str, dict] = {"reference": {
        name: float(brightness[tissues == TISSUE_INDEX[name]].mean())
        for name in ("gm", "wm", "csf") if np.any(tissues == TISSUE_INDEX[name])
    }}
    for group in groups:
        if group not in TISSUE_INDEX:
            raise ValueError(f"unknown tissue {group!r}; known: {', '.join(TISSUE_INDEX)}")
        region = tissues == TISSUE_INDEX[group]
        if not region.any():
            raise ValueError(f"the label map holds no {group} voxel")
        values, shade, far = prediction[region], brightness[region], distance[region]
        # <= 2 mm is "within one voxel or two" on 1-2 mm grids: a small margin keeps exact 2.0 in the first bin.
        report[group] = {
            "voxels": int(region.sum()),
            "mean_conductivity": float(values.mean()),
            "by_brightness": _rows(values, shade, _bins(shade, BRIGHTNESS_EDGES[:-1]),
                                   brightness_names),
            "by_distance_mm": _rows(values, shade, _bins(far - 1e-6, DISTANCE_EDGES_MM),
                                    distance_names),
        }
    return report


def markdown(report: Dict[str, dict]) -> str:
    """The report as markdown tables."""
    reference = ", ".join(f"{name.upper()} {value:.2f}" for name, value in report["reference"].items())
    lines = [f"Mean scaled brightness of the whole labels: {reference}.", ""]
    for group, entry in report.items():
        if group == "reference":
            continue
        lines += [f"### {group}: {entry['voxels']} voxels, mean {entry['mean_conductivity']:.3f} S/m", ""]
        for key, title in (("by_brightness", "scaled brightness"), ("by_distance_mm", "distance from brain (mm)")):
            lines += [f"| {title} | voxels | mean conductivity (S/m) | mean brightness |", "|---|---:|---:|---:|"]
            for row in entry[key]:
                if row["voxels"]:
                    lines.append(f"| {row['bin']} | {row['voxels']} | {row['mean_conductivity']:.3f} | "
                                 f"{row['mean_brightness']:.2f} |")
                else:
                    lines.append(f"| {row['bin']} | 0 | - | - |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from CondNetLogic.io import read_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prediction", required=True, help="conductivity volume (S/m), e.g. condnet predict's output")
    parser.add_argument("--image", required=True, help="MRI image on the same grid (brightness bins)")
    parser.add_argument("--labels", required=True, help="label map on the same grid")
    parser.add_argument("--mapping", default="samseg", help="label -> tissue CSV, or samseg / synthseg")
    parser.add_argument("--tissues", nargs="+", default=["csf", "vitreous_humor"], help="tissues to split")
    parser.add_argument("--json", help="also write the numbers to this JSON file (a new file)")
    args = parser.parse_args(argv)
    if args.json and Path(args.json).exists():
        parser.error(f"--json {args.json} exists; choose a new file")
    prediction, image, labels = (read_volume(path) for path in (args.prediction, args.image, args.labels))
    for name, volume in (("image", image), ("labels", labels)):
        if not volume.same_grid(prediction):
            parser.error(f"--{name} is not on the prediction's grid ({volume.shape} vs {prediction.shape}); "
                         "resample it first (condnet resample)")
    tissues = labels_to_tissues(labels.array, read_label_mapping(label_mapping_path(args.mapping)))
    report = breakdown(prediction.array, image.array, tissues, prediction.spacing, args.tissues)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
