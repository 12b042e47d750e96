"""``condnet demo``: the whole pipeline on the shipped sample head.

1. The shipped label map (a real head from the SynthSeg training maps, held out from CondNet's training)
   gives simulated T1/T2 images (seeded) and the reference uniform conductivity (Table I A).
2. CondNet estimates the conductivity from the T1/T2 pair; it is compared per tissue with the reference.
3. A figure-8 coil is placed over C3 (from the sample's approximate fiducials), handle pointing 45 degrees
   posterior-lateral, and the E-field is solved on both conductivity maps; the paper's GE (Eq. 6) in the
   brain and |E| statistics at the cortex under the coil are reported.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "run the whole pipeline (T1/T2 -> CondNet -> E-field at C3) on the shipped sample head"

SAMPLE = "training_seg_18"
#: Synthesis seed of the demo images; the shipped weights' training set uses other seeds and other maps.
DEMO_SEED = 2026
#: Radius (mm) of the cortical ROI under the coil centre.
ROI_RADIUS_MM = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet demo``."""
    parser.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    parser.add_argument("--weights", default=None, help="CondNet weights (default: the shipped weights)")
    parser.add_argument("--coil", default="figure8_70mm", help="coil name, coil JSON file or SimNIBS .ccd/.tcd file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")


def _cortex_target(tissues, mask, scalp_point, normal):
    """First grey-matter point (RAS mm) below ``scalp_point`` along the inward ``normal``."""
    import numpy as np

    from ..conductivity import TISSUE_INDEX

    for depth in np.arange(0.0, 60.0, 0.5):
        point = scalp_point + depth * normal
        ijk = np.rint(mask.ras_to_ijk_points(point)).astype(int)
        if tissues[tuple(ijk)] == TISSUE_INDEX["gm"]:
            return point
    raise ValueError(f"no grey matter within 60 mm below {np.round(scalp_point, 1)}")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print a summary; everything is written to ``--out``."""
    import numpy as np

    from ..coil import coil_pose, load_coil
    from ..conductivity import TABLE_A, TISSUE_INDEX, labels_to_tissues, read_label_mapping, resource_path
    from ..conductivity import tissues_to_conductivity
    from ..efield import EFieldSimulation
    from ..evaluation import evaluate_prediction, markdown_table, write_report
    from ..inference import predict_conductivity
    from ..io import read_volume, write_volume
    from ..metrics import generalized_error, roi_stats, spherical_roi
    from ..primary_field import cached_grid, default_cache_dir
    from ..scalp import eeg_position, outer_head, scalp_normal
    from ..synth import SynthOptions, synthesize_pair
    from ._progress import ProgressBar

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def save(volume, name):
        write_volume(volume, out / name, overwrite=args.overwrite)

    with ProgressBar("demo") as bar:
        labels = read_volume(resource_path("sample", f"{SAMPLE}.nii.gz"))
        mapping = read_label_mapping(resource_path("tissue_maps", "synthseg_labels.csv"))
        tissues = labels_to_tissues(labels.array, mapping)
        bar.stage(0, 5)(0.0, "synthesising T1/T2")
        t1_array, t2_array, _ = synthesize_pair(
            tissues, rng=np.random.default_rng(DEMO_SEED), options=SynthOptions.randomised(), labels=labels.array
        )
        t1, t2 = labels.with_array(t1_array), labels.with_array(t2_array)
        reference = labels.with_array(tissues_to_conductivity(tissues, TABLE_A))
        for volume, name in ((t1, "t1.nii.gz"), (t2, "t2.nii.gz"), (reference, "conductivity_reference_A.nii.gz")):
            save(volume, name)

        prediction = predict_conductivity(t1, t2, weights=args.weights, device=args.device, progress=bar.stage(5, 60))
        condnet = prediction.conductivity["A"]
        save(condnet, "conductivity_A.nii.gz")
        save(prediction.uncertainty["A"], "uncertainty_A.nii.gz")
        evaluation = evaluate_prediction(prediction, labels, mapping, t1=t1)
        write_report(evaluation, prediction, out, t1=t1, t2=t2, overwrite=args.overwrite)

        landmarks = json.loads(resource_path("sample", f"{SAMPLE}_landmarks.json").read_text())["landmarks"]
        head = outer_head(labels.with_array(tissues > 0))  # the label map's islands outside the scalp left out
        c3 = eeg_position("C3", {k: np.asarray(v) for k, v in landmarks.items()}, head)
        normal = scalp_normal(head, c3)
        handle = np.array([-1.0, -1.0, 0.0]) / np.sqrt(2.0)  # posterior and lateral (left), 45 degrees
        coil = load_coil(args.coil)
        coil_to_ras = coil_pose(c3, normal, handle)
        target = _cortex_target(tissues, head, c3, normal)
        roi = spherical_roi(labels, target, ROI_RADIUS_MM) & (tissues == TISSUE_INDEX["gm"])
        brain = np.isin(tissues, [TISSUE_INDEX[t] for t in ("gm", "wm")])

        grid = cached_grid(coil, default_cache_dir(), progress=bar.stage(60, 70))
        fields = {}
        for name, sigma, (low, high) in (("condnet", condnet, (70, 85)), ("reference", reference, (85, 100))):
            simulation = EFieldSimulation(sigma, device=args.device, grid=grid, progress=bar.stage(low, low + 5))
            result = simulation.solve(coil, coil_to_ras, coil.didt_max, progress=bar.stage(low + 5, high))
            save(result.e_vector, f"efield_{name}.nii.gz")
            save(result.e_magnitude, f"efield_{name}_magnitude.nii.gz")
            fields[name] = result

    condnet_e = fields["condnet"].e_magnitude.array
    reference_e = fields["reference"].e_magnitude.array
    summary = {
        "sample": f"{SAMPLE} (SynthSeg label map, held out from training; simulated T1/T2, seed {DEMO_SEED})",
        "coil": {"name": coil.name, "position": "C3", "scalp_point_ras_mm": c3.round(2).tolist(),
                 "coil_to_ras": np.asarray(coil_to_ras).round(4).tolist(), "didt_a_per_s": coil.didt_max},
        "cortex_target_ras_mm": target.round(2).tolist(),
        "conductivity": evaluation.report["tables"]["A"],
        "efield": {
            name: {"roi_gm_10mm": roi_stats(result.e_magnitude, roi), "brain": roi_stats(result.e_magnitude, brain),
                   "solver": {k: result.info[k] for k in ("iterations", "residual", "converged", "device", "timings")}}
            for name, result in fields.items()
        },
        "generalized_error_brain_percent": generalized_error(condnet_e, reference_e, brain),
        "generalized_error_roi_percent": generalized_error(condnet_e, reference_e, roi),
        "prediction": prediction.info,
        "wall_time_s": time.perf_counter() - started,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    print(markdown_table(evaluation.report))
    for name in fields:
        stats = summary["efield"][name]["roi_gm_10mm"]
        print(f"|E| in grey matter within {ROI_RADIUS_MM:.0f} mm of the target ({name} conductivity): "
              f"mean {stats['mean']:.1f} V/m, 99th percentile {stats['p99']:.1f} V/m")
    ge_brain, ge_roi = summary["generalized_error_brain_percent"], summary["generalized_error_roi_percent"]
    print(f"GE (paper Eq. 6), CondNet vs reference conductivity: brain {ge_brain:.1f} %, ROI {ge_roi:.1f} %")
    print(f"outputs in {out} ({summary['wall_time_s']:.0f} s)")
    return 0
