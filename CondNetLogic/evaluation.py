"""Evaluate CondNet against a label map: per-tissue conductivity (like the paper's Table V), MAE, figures.

The reference is the *uniform* conductivity map of the label map (Table I value per tissue).  The
label map is brought onto the T1 grid with nearest-neighbour interpolation, its labels are mapped to
tissues, and the outer 2 mm of the labelled head are taken as skin (the paper's models have a skin
layer; automatic segmentations such as SAMSEG often do not), in the uniform map too.

Reported per tissue group (CSF, vitreous humor, GM, WM, cerebellum, skull = cortical + cancellous
bone, soft tissue = muscle + fat, skin): voxel count, CondNet mean +- sd (S/m), the Table I value(s)
and the mean of the uniform map, and the mean absolute difference CondNet - uniform; also the CondNet
mean over the group's *interior* (voxels whose six face neighbours are in the group too), which tells a
miss at the tissue's borders (partial volume, blur) from a miss of the whole tissue.  Over the whole
head: the MAE of CondNet against the uniform map, next to the MAE of a constant map (the uniform
map's head mean everywhere) as the no-information baseline, so the number can be judged.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ._types import PathLike
from .conductivity import TISSUE_INDEX, ConductivityTable, labels_to_tissues, tissues_to_conductivity
from .volume import Volume

__all__ = [
    "GROUPS",
    "SKIN_DEPTH_MM",
    "Evaluation",
    "comparison_figure",
    "evaluate_prediction",
    "interior_cell",
    "interior_of",
    "markdown_table",
    "report_paths",
    "skin_shell",
    "tissues_on_grid",
    "write_report",
]

logger = logging.getLogger(__name__)

#: Outer layer of the head taken as skin (mm).
SKIN_DEPTH_MM = 2.0
#: Reported tissue groups -> Table I tissues ("skin" is the outer shell, see :func:`skin_shell`).
GROUPS: Dict[str, tuple] = {
    "CSF": ("csf",),
    "vitreous humor": ("vitreous_humor",),
    "GM": ("gm",),
    "WM": ("wm",),
    "cerebellum": ("cerebellum",),
    "skull": ("cortical_bone", "cancellous_bone"),
    "soft tissue": ("muscle", "fat"),
    "skin": ("skin",),
}


def skin_shell(head: np.ndarray, spacing_mm, depth_mm: float = SKIN_DEPTH_MM, *,
               beyond: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxels of ``head`` within ``depth_mm`` of its outside (Euclidean distance of voxel centres).

    Parameters
    ----------
    head : ndarray of bool (I, J, K)
    spacing_mm : array-like (3,)
        Voxel size along I, J, K in mm.
    depth_mm : float
    beyond : ndarray of bool (I, J, K), optional
        Voxels outside the label map's field of view (a label map smaller than the grid): unknown, not air, so
        the head may go on there as it may beyond the grid; a head cut there gets no skin on the cut.

    Returns
    -------
    ndarray of bool (I, J, K)
        A head voxel is in the shell when its centre is at most ``depth_mm`` from the centre of the
        nearest voxel outside the head minus half a voxel, i.e. the outer ``depth_mm`` of tissue.  Enclosed
        pockets of non-head voxels (air or unlabelled voxels inside the head) are not its outside, and the
        outermost layer is always in the shell, even across slices thicker than ``2 * depth_mm``.  With no
        outside voxel on the grid the shell is empty.

    Examples
    --------
    >>> head = np.zeros((11, 11, 11), bool); head[1:10, 1:10, 1:10] = True
    >>> skin_shell(head, (1, 1, 1))[5, 5].astype(int).tolist()
    [0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]
    >>> skin_shell(head, (4, 4, 4))[5, 5].astype(int).tolist()
    [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    """
    from scipy import ndimage

    from ._resample import bounding_box, fill_holes

    head = np.asarray(head, dtype=bool)
    solid = fill_holes(head)  # the outside is what the border reaches
    # Voxels ``beyond`` the label map's field of view are not air: the head may go on there, as beyond the grid.
    not_air = solid if beyond is None else solid | np.asarray(beyond, dtype=bool)
    if not_air.all():  # no air anywhere on the grid: the head goes on beyond it on every side
        return np.zeros_like(head)
    # Within the box grown by one air voxel, the nearest air is found as in the whole volume: clamping an
    # air voxel outside the box onto that air margin brings it no farther from any voxel inside.
    box = bounding_box(not_air, pad=1)
    distance = ndimage.distance_transform_edt(not_air[box], sampling=np.asarray(spacing_mm, dtype=float))
    # A voxel next to air has distance 1 voxel from the air voxel's centre, i.e. 0.5 voxel of tissue outside it.
    # "<=" keeps the outermost layer even when one voxel is as thick as the shell (4 mm voxels, 2 mm skin).
    outermost = solid[box] & ~ndimage.binary_erosion(not_air[box], ndimage.generate_binary_structure(3, 1),
                                                     border_value=1)  # a head cut by the grid goes on beyond it
    shell = np.zeros_like(head)
    shell[box] = head[box] & ((distance - 0.5 * float(np.min(spacing_mm)) <= depth_mm) | outermost)
    return shell


def tissues_on_grid(labels: Volume, mapping: Mapping[int, int], grid: Volume) -> np.ndarray:
    """Tissue indices (uint8) of a label map taken onto ``grid`` (nearest neighbour through RAS).

    Cheap next to a prediction: ``condnet evaluate`` calls it first, so that a bad label map fails before the work.

    Raises
    ------
    ValueError
        If the labels are not integers, a label is not in ``mapping``, or no head voxel lands on ``grid``.
    """
    from .preprocessing import resample_to

    if not np.issubdtype(labels.array.dtype, np.integer):
        rounded = np.rint(labels.array)
        if not np.array_equal(rounded, labels.array):
            raise ValueError(f"labels must be integers; got dtype {labels.array.dtype} with fractional values")
        labels = labels.with_array(rounded.astype(np.int32))
    on_grid = labels if labels.same_grid(grid) else resample_to(labels, grid, interpolation="nearest")
    tissues = labels_to_tissues(on_grid.array, mapping).astype(np.uint8)
    if not tissues.any():
        raise ValueError("the label map holds no head voxel on the T1 grid (no overlap, or every label maps to air)")
    return tissues


@dataclass
class Evaluation:
    """Result of :func:`evaluate_prediction`: per-table reports and the volumes for figures."""

    report: dict
    uniform: Dict[str, Volume]
    tissues: Volume


def evaluate_prediction(
    prediction,
    labels: Volume,
    mapping: Mapping[int, int],
    *,
    t1: Volume,
) -> Evaluation:
    """Compare a :class:`~CondNetLogic.inference.Prediction` with the uniform map of a label map.

    Parameters
    ----------
    prediction : Prediction
        CondNet output on the T1 grid.
    labels : Volume
        Integer label map of the same head (any grid; resampled nearest-neighbour onto the T1 grid).
    mapping : mapping
        Label -> tissue index (:func:`~CondNetLogic.conductivity.read_label_mapping`).
    t1 : Volume
        The T1 the prediction was made from (defines the grid).

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        If the labels are not integers, the label map is empty on the T1 grid, or the prediction is not
        on the T1 grid.
    """
    for name, volume in prediction.conductivity.items():
        if not volume.same_grid(t1):
            raise ValueError(f"prediction {name} is not on the T1 grid ({volume.shape} vs {t1.shape})")
    tissues = tissues_on_grid(labels, mapping, t1)
    head = tissues > 0
    beyond = None  # T1 voxels outside the label map's field of view
    if not labels.same_grid(t1):
        from .preprocessing import resample_to

        covered = resample_to(labels.with_array(np.ones(labels.shape, np.uint8)), t1, interpolation="nearest")
        beyond = covered.array == 0
    shell = skin_shell(head, t1.spacing, beyond=beyond)
    tissues = np.where(shell, np.uint8(TISSUE_INDEX["skin"]), tissues)
    predicted_head = prediction.head_mask.array > 0
    dice = 2 * np.count_nonzero(head & predicted_head) / (np.count_nonzero(head) + np.count_nonzero(predicted_head))
    report = {"head": {"voxels_labels": int(head.sum()), "voxels_condnet_mask": int(predicted_head.sum()),
                       "dice": float(dice), "skin_depth_mm": SKIN_DEPTH_MM}, "tables": {}}
    uniform_volumes = {}
    for name, condnet in prediction.conductivity.items():
        table = _table_of(prediction, name)
        uniform = tissues_to_conductivity(tissues, table).astype(np.float32)
        uniform_volumes[name] = t1.with_array(uniform)
        sigma = condnet.array
        rows = {}
        for group, members in GROUPS.items():
            region = np.isin(tissues, [TISSUE_INDEX[m] for m in members])
            count = int(region.sum())
            values = sigma[region]
            interior = interior_of(region)
            interior_count = int(interior.sum())
            rows[group] = {
                "voxels": count,
                "condnet_mean": float(values.mean()) if count else None,
                "condnet_sd": float(values.std()) if count else None,
                "interior_voxels": interior_count,
                "interior_mean": float(sigma[interior].mean()) if interior_count else None,
                "table_values": {m: table.values[m] for m in members if m in table.values},
                "uniform_mean": float(uniform[region].mean()) if count else None,
                "mae": float(np.abs(values - uniform[region]).mean()) if count else None,
            }
        difference = np.abs(sigma[head] - uniform[head])
        baseline = np.abs(uniform[head].mean() - uniform[head])
        report["tables"][name] = {
            "groups": rows,
            "mae_condnet_vs_uniform": float(difference.mean()),
            "mae_constant_vs_uniform": float(baseline.mean()),
            "uncertainty_mean_in_head": float(prediction.uncertainty[name].array[head].mean()),
            "units": "S/m",
        }
    return Evaluation(report, uniform_volumes, t1.with_array(tissues))


def interior_of(region: np.ndarray) -> np.ndarray:
    """Voxels of the boolean ``region`` whose six face neighbours are in it too (outside the array counts as out)."""
    from scipy import ndimage

    return ndimage.binary_erosion(region, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def _table_of(prediction, name: str) -> ConductivityTable:
    """The table the weights were trained on (recorded in ``prediction.info``), else the built-in one."""
    from .conductivity import get_table

    values = prediction.info.get("table_values", {}).get(name)
    return ConductivityTable(name, values) if values else get_table(name)


def markdown_table(report: dict) -> str:
    """The per-tissue report as Markdown (one table per conductivity table)."""
    lines = []
    head = report["head"]
    lines.append(f"Head voxels: {head['voxels_labels']} (labels), {head['voxels_condnet_mask']} (CondNet mask), "
                 f"Dice {head['dice']:.3f}; skin = outer {head['skin_depth_mm']:g} mm of the labelled head.\n")
    for name, data in report["tables"].items():
        lines.append(f"### Table I ({name}), S/m\n")
        lines.append("| Tissue | Voxels | CondNet mean ± sd | Interior: mean (voxels) | Table I | Uniform mean | MAE |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for group, row in data["groups"].items():
            table_values = " / ".join(f"{v:.3f}" for v in row["table_values"].values())
            if row["voxels"]:
                lines.append(f"| {group} | {row['voxels']} | {row['condnet_mean']:.3f} ± {row['condnet_sd']:.3f} | "
                             f"{interior_cell(row)} | {table_values} | {row['uniform_mean']:.3f} | {row['mae']:.3f} |")
            else:
                lines.append(f"| {group} | 0 | – | – | {table_values} | – | – |")
        lines.append("")
        lines.append("Interior: the group's voxels whose six face neighbours are in the group too (no border voxel).\n")
        lines.append(f"MAE over the head, CondNet vs uniform: **{data['mae_condnet_vs_uniform']:.4f} S/m**; "
                     f"constant map (head mean) vs uniform: {data['mae_constant_vs_uniform']:.4f} S/m; "
                     f"mean uncertainty (sd across directions): {data['uncertainty_mean_in_head']:.4f} S/m.\n")
    return "\n".join(lines)


def interior_cell(row: Mapping) -> str:
    """``mean (voxels)`` of a group's interior for a Markdown table; ``–`` when it has none."""
    if not row.get("interior_voxels"):
        return "– (0)"
    return f"{row['interior_mean']:.3f} ({row['interior_voxels']})"


def comparison_figure(t1: Volume, t2: Optional[Volume], uniform: Volume, condnet: Volume, uncertainty: Volume,
                      path: PathLike, *, title: str = "") -> Path:
    """PNG with rows axial / sagittal / coronal and columns T1 | T2 | uniform | CondNet | uncertainty (Figs. 6-7).

    Slices pass through the centre of the head (CondNet's non-zero voxels), shown in radiological-free
    RAS display (right of the subject on the right of the image, superior/anterior up).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from .preprocessing import reorient_canonical, resample_to

    columns = [("T1", t1), ("T2", t2), ("uniform", uniform), ("CondNet", condnet), ("uncertainty (sd)", uncertainty)]
    columns = [(label, v if v is None or v.same_grid(t1) else resample_to(v, t1)) for label, v in columns]
    arrays = {label: None if v is None else reorient_canonical(v).array for label, v in columns}
    spacing = reorient_canonical(t1).spacing
    # Height / width of a pixel of the slice across each axis (rows S, S, A; columns A, R, R).
    aspects = {0: spacing[2] / spacing[1], 1: spacing[2] / spacing[0], 2: spacing[1] / spacing[0]}
    head = np.argwhere(arrays["CondNet"] > 0)
    centre = ((head.min(axis=0) + head.max(axis=0)) // 2) if len(head) else np.asarray(arrays["T1"].shape) // 2
    sigma_max = float(max(arrays["uniform"].max(), arrays["CondNet"].max(), 1e-6))
    sd_max = float(max(np.percentile(arrays["uncertainty (sd)"], 99.9), 1e-6))
    fig, axes = plt.subplots(3, len(columns), figsize=(3 * len(columns), 9), squeeze=False)
    for row, (plane, axis) in enumerate((("axial", 2), ("sagittal", 0), ("coronal", 1))):
        for col, (label, _) in enumerate(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            array = arrays[label]
            if array is None:
                ax.text(0.5, 0.5, "not given", ha="center", va="center", transform=ax.transAxes)
            else:
                image = np.take(array, centre[axis], axis=axis).T
                style = {"origin": "lower", "aspect": aspects[axis]}  # pixels drawn in mm, not voxels
                if label in ("T1", "T2"):
                    shown = ax.imshow(image, cmap="gray", **style)
                elif label == "uncertainty (sd)":
                    shown = ax.imshow(image, cmap="magma", vmin=0, vmax=sd_max, **style)
                else:
                    shown = ax.imshow(image, cmap="viridis", vmin=0, vmax=sigma_max, **style)
                if label not in ("T1", "T2") and row == 0:
                    fig.colorbar(shown, ax=ax, fraction=0.046, label="S/m")
            if row == 0:
                ax.set_title(label)
            if col == 0:
                ax.set_ylabel(plane)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report_paths(out_dir: PathLike, table_names: Sequence[str], *, overwrite: bool = False) -> Dict[str, Path]:
    """Paths :func:`write_report` writes for these tables, checked by :func:`~CondNetLogic.io.check_outputs`.

    Call it before a long prediction, so existing results and unwritable folders are refused before any
    work is done (``FileExistsError`` if an output exists and not ``overwrite``).
    """
    from .io import check_outputs

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "evaluation.json", "markdown": out_dir / "evaluation.md",
             **{f"figure_{n}": out_dir / f"comparison_{n}.png" for n in table_names}}
    check_outputs(paths.values(), overwrite=overwrite)
    return paths


def write_report(evaluation: Evaluation, prediction, out_dir: PathLike, *, t1: Volume, t2: Optional[Volume],
                 extra: Optional[dict] = None, overwrite: bool = False) -> Dict[str, Path]:
    """Write ``evaluation.json``, ``evaluation.md`` and ``comparison_<table>.png`` into ``out_dir``.

    Raises
    ------
    FileExistsError
        If an output exists and ``overwrite`` is false (checked before anything is written).
    """
    out_dir = Path(out_dir)
    names = list(evaluation.report["tables"])
    paths = report_paths(out_dir, names, overwrite=overwrite)
    from .io import removed_on_error, write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**evaluation.report, "prediction": prediction.info, **(extra or {})}
    with removed_on_error() as files:  # all outputs or none
        files.append(write_text(paths["json"], json.dumps(payload, indent=2, default=str) + "\n",
                                overwrite=overwrite))
        files.append(write_text(paths["markdown"], "# CondNet evaluation\n\n" + markdown_table(evaluation.report),
                                overwrite=overwrite))
        for name in names:
            files.append(paths[f"figure_{name}"])
            comparison_figure(t1, t2, evaluation.uniform[name], prediction.conductivity[name],
                              prediction.uncertainty[name], paths[f"figure_{name}"], title=f"Table I ({name})")
    return paths
