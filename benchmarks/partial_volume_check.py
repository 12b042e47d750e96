"""Where a tissue's predicted conductivity falls short: by image brightness and by distance from the brain.

Issue 7's MNI152 check misses CSF and vitreous humor (a mean below the target over all voxels of the SAMSEG
label).  This script splits such a label's voxels two ways and gives the mean predicted conductivity (S/m) of
each part:

* **by image brightness**: the image (a T2w scan, say) scaled so that its 0.5th and 99.5th percentiles over the
  labelled head map to 0 and 1 (clipped), as ``Resources/mri_priors.json`` measures tissue contrast; the bins
  are 0.2 wide.  A CSF voxel that is no brighter than grey matter on T2w holds mostly tissue, whatever its label;
* **by distance from the brain** (GM, WM and cerebellum of the same label map), in mm between voxel centres:
  the thin layers (subarachnoid CSF) lie within a voxel or two of it;
* **by fluid fraction** (with ``--t1``, ``--image`` then being the T2w scan): each voxel's (T1, T2) brightness
  unmixed linearly between pure fluid (the interior of the lateral ventricles, labels 4 and 43) and pure grey
  matter (the interior of the cerebral cortex, labels 3 and 42), so 0.5 is a voxel half CSF and half GM.

The prediction, the image and the label map must share one grid (``condnet predict`` writes the conductivity on
its T1's grid; pass that T1, or a T2 on the same grid).  Prints a markdown report; ``--json`` also writes the
numbers.  Example (MNI152, the shipped weights)::

    condnet predict --t1 MNI152_T1_2mm.nii.gz --t2 MNI152_T2_2mm.nii.gz --out /tmp/pv/sigma.nii.gz
    python benchmarks/partial_volume_check.py --prediction /tmp/pv/sigma.nii.gz --image MNI152_T2_2mm.nii.gz \
        --labels samseg/seg.nii.gz --mapping samseg --t1 MNI152_T1_2mm.nii.gz
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from CondNetLogic.conductivity import TISSUE_INDEX, label_mapping_path, labels_to_tissues, read_label_mapping  # noqa: E402

#: Upper edges of the brightness bins (the last one includes 1.0).
BRIGHTNESS_EDGES = (0.2, 0.4, 0.6, 0.8, 1.0)
#: Upper edges (mm) of the distance-from-brain bins; the last bin is open.
DISTANCE_EDGES_MM = (2.0, 4.0, 8.0)
#: Upper edges of the fluid-fraction bins (the last one includes 1.0).
FRACTION_EDGES = (0.25, 0.5, 0.75, 1.0)
#: Default pure references of :func:`fluid_fraction` (FreeSurfer labels, as SAMSEG and SynthSeg write them).
VENTRICLES = (4, 43)
CORTEX = (3, 42)
BRAIN = ("gm", "wm", "cerebellum")


def scaled_brightness(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """``image`` scaled so its 0.5th / 99.5th percentiles over ``head`` become 0 / 1, clipped to [0, 1]."""
    low, high = np.percentile(image[head], [0.5, 99.5])
    if not high > low:
        raise ValueError("the image is constant over the head: no brightness to bin")
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def fluid_fraction(t1: np.ndarray, t2: np.ndarray, labels: np.ndarray, fluid_labels: Sequence[int] = VENTRICLES,
                   tissue_labels: Sequence[int] = CORTEX) -> tuple:
    """Share of fluid in each voxel, by linear unmixing of its (T1, T2) brightness between two pure references.

    Both images are scaled with :func:`scaled_brightness` over the labelled head (``labels > 0``).  The pure
    references are the mean (T1, T2) of the *interior* (voxels whose six face neighbours are in the same set) of
    ``fluid_labels`` and of ``tissue_labels``.  A voxel's fraction is where its (T1, T2) projects on the segment
    from the tissue reference (0) to the fluid reference (1), clipped to [0, 1].  Partial volume mixes the signals
    linearly, so a voxel half fluid and half tissue gets 0.5.

    Returns
    -------
    fraction : ndarray (I, J, K)
        Fluid fraction, 0..1 (float64).
    references : dict
        ``{"fluid": [t1, t2], "tissue": [t1, t2]}``, scaled brightness of the two references.

    Raises
    ------
    ValueError
        If the grids differ, a reference has no interior voxel, or the two references coincide.
    """
    from scipy import ndimage

    if not (t1.shape == t2.shape == labels.shape):
        raise ValueError(f"T1 {t1.shape}, T2 {t2.shape} and labels {labels.shape} must share one grid")
    head = labels > 0
    pixels = np.stack([scaled_brightness(np.asarray(image, dtype=np.float64), head) for image in (t1, t2)], axis=-1)
    structure = ndimage.generate_binary_structure(3, 1)
    references = {}
    for name, members in (("fluid", fluid_labels), ("tissue", tissue_labels)):
        interior = ndimage.binary_erosion(np.isin(labels, list(members)), structure)
        if not interior.any():
            raise ValueError(f"the labels {list(members)} have no interior voxel: no pure {name} reference")
        references[name] = pixels[interior].mean(axis=0)
    axis = references["fluid"] - references["tissue"]
    if not np.dot(axis, axis) > 1e-12:
        raise ValueError("the fluid and tissue references have the same brightness: nothing to unmix")
    fraction = np.clip((pixels - references["tissue"]) @ axis / np.dot(axis, axis), 0.0, 1.0)
    return fraction, {name: [float(v) for v in value] for name, value in references.items()}


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
              groups: Sequence[str], fraction: Optional[np.ndarray] = None) -> Dict[str, dict]:
    """Mean prediction (S/m) of each tissue in ``groups`` by brightness bin, by distance-from-brain bin and,
    given ``fraction``, by fluid-fraction bin.

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
    fraction : ndarray (I, J, K), optional
        Fluid fraction per voxel (:func:`fluid_fraction`).

    Returns
    -------
    dict
        ``{"reference": {tissue: mean brightness}, tissue: {"voxels", "mean_conductivity", "by_brightness":
        rows, "by_distance_mm": rows}}``, each row ``{"bin", "voxels", "mean_conductivity", "mean_brightness"}``;
        with ``fraction``, each tissue also has ``"mean_fluid_fraction"`` and ``"by_fluid_fraction"`` rows.
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
    fraction_names = [f"{low:.2f}-{high:.2f}" for low, high in zip((0.0,) + FRACTION_EDGES, FRACTION_EDGES)]
    if fraction is not None and np.shape(fraction) != tissues.shape:
        raise ValueError(f"fraction {np.shape(fraction)} is not on the grid of the tissues {tissues.shape}")
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
        if fraction is not None:
            share = fraction[region]
            report[group]["mean_fluid_fraction"] = float(share.mean())
            report[group]["by_fluid_fraction"] = _rows(values, shade, _bins(share, FRACTION_EDGES[:-1]),
                                                       fraction_names)
    return report


def markdown(report: Dict[str, dict]) -> str:
    """The report as markdown tables."""
    reference = ", ".join(f"{name.upper()} {value:.2f}" for name, value in report["reference"].items())
    lines = [f"Mean scaled brightness of the whole labels: {reference}.", ""]
    if "unmixing" in report:
        unmixing = report["unmixing"]
        fluid, tissue = (", ".join(f"{v:.2f}" for v in unmixing[key]) for key in ("fluid", "tissue"))
        lines += [f"Fluid fraction: (T1, T2) unmixed between the interiors of labels {unmixing['fluid_labels']} "
                  f"(fluid, {fluid}) and {unmixing['tissue_labels']} (tissue, {tissue}).", ""]
    for group, entry in report.items():
        if group in ("reference", "unmixing"):
            continue
        share = f", mean fluid fraction {entry['mean_fluid_fraction']:.2f}" if "mean_fluid_fraction" in entry else ""
        lines += [f"### {group}: {entry['voxels']} voxels, mean {entry['mean_conductivity']:.3f} S/m{share}", ""]
        for key, title in (("by_brightness", "scaled brightness"), ("by_distance_mm", "distance from brain (mm)"),
                           ("by_fluid_fraction", "fluid fraction")):
            if key not in entry:
                continue
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
    parser.add_argument("--t1", help="T1w image on the same grid: adds fluid-fraction bins (--image is the T2w)")
    parser.add_argument("--fluid-labels", type=int, nargs="+", default=list(VENTRICLES),
                        help="labels whose interior is pure fluid (default: lateral ventricles 4 43)")
    parser.add_argument("--tissue-labels", type=int, nargs="+", default=list(CORTEX),
                        help="labels whose interior is pure tissue (default: cerebral cortex 3 42)")
    parser.add_argument("--labels", required=True, help="label map on the same grid")
    parser.add_argument("--mapping", default="samseg", help="label -> tissue CSV, or samseg / synthseg")
    parser.add_argument("--tissues", nargs="+", default=["csf", "vitreous_humor"], help="tissues to split")
    parser.add_argument("--json", help="also write the numbers to this JSON file (a new file)")
    args = parser.parse_args(argv)
    if args.json and Path(args.json).exists():
        parser.error(f"--json {args.json} exists; choose a new file")
    prediction, image, labels = (read_volume(path) for path in (args.prediction, args.image, args.labels))
    t1 = read_volume(args.t1) if args.t1 else None
    for name, volume in (("image", image), ("labels", labels), ("t1", t1)):
        if volume is not None and not volume.same_grid(prediction):
            parser.error(f"--{name} is not on the prediction's grid ({volume.shape} vs {prediction.shape}); "
                         "resample it first (condnet resample)")
    tissues = labels_to_tissues(labels.array, read_label_mapping(label_mapping_path(args.mapping)))
    fraction = None
    if t1 is not None:
        fraction, references = fluid_fraction(t1.array, image.array, labels.array, args.fluid_labels,
                                              args.tissue_labels)
    report = breakdown(prediction.array, image.array, tissues, prediction.spacing, args.tissues, fraction)
    if t1 is not None:
        report["unmixing"] = {"fluid_labels": args.fluid_labels, "tissue_labels": args.tissue_labels, **references}
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
