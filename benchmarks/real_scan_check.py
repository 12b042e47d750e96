"""Check CondNet on real scans (issue 7, items 5 and 6): per-tissue conductivity like the paper's Table V.

Cases (``--cases``):

``mni152``
    The real MNI152 T1 + T2 pair (2 mm, so it goes through the resampling path) against its SAMSEG
    segmentation (``data/mni152/samseg/seg.nii.gz`` with ``Resources/tissue_maps/samseg_labels.csv``).
``colin27``
    The Colin27 T1 passed as *both* inputs against its SAMSEG segmentation.  No T2 exists for Colin27:
    this is a plumbing check only, never a result.
``synthetic_val``
    T1/T2 pairs synthesised (``SynthOptions.randomised()``) with seeds not used for training from the
    validation label maps (default ``training_seg_17`` seed 9001, ``training_seg_18`` seed 9002),
    evaluated against the maps' own labels (``Resources/tissue_maps/synthseg_labels.csv``).

For every case the per-tissue statistics come from :func:`CondNetLogic.evaluation.evaluate_prediction`
(skin = outer 2 mm of the labelled head) and are written with
:func:`~CondNetLogic.evaluation.write_report` to ``OUT/<case>/`` (``evaluation.json``, ``evaluation.md``,
``comparison_<table>.png`` with T1 | T2 | uniform | CondNet | uncertainty).  The combined report
``OUT/real_scan_check.md`` (and ``.json``) holds per-case Table-V-style tables, each tissue group's target
range from issue 7 with PASS/MISS, the MAE against the uniform map next to the constant-map baseline,
timings, the weights' sha256 and the exact command.

Usage::

    python benchmarks/real_scan_check.py --out /tmp/real_scan_check                  # shipped weights, all cases
    python benchmarks/real_scan_check.py --weights W.safetensors --out DIR --threads 2
    python benchmarks/real_scan_check.py --weights W.safetensors --out DIR --downsample 4 --cases mni152

``--downsample N`` resamples the inputs to N mm before prediction (and the synthetic label maps before
synthesis): faster evaluation and synthesis, coarser statistics.  Prediction itself always runs on the
weights' 1 mm model grid.  Numbers for the record come from a run without ``--downsample``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from CondNetLogic.evaluation import GROUPS, interior_cell  # noqa: E402
from CondNetLogic.inference import PRECISIONS  # noqa: E402

#: Target range (low, high) in S/m of the mean predicted conductivity per tissue group, for Table I (A).
#: Source: issue 7 item 5 ("every mean no further from Table I than the worst case of the paper's
#: Table V").  ``None`` = open end.  Cerebellum and soft tissue are not in Table V: no target.
TARGETS_TABLE_A: Dict[str, Tuple[Optional[float], Optional[float]]] = {
    "CSF": (1.5, None),
    "vitreous humor": (1.2, 1.9),
    "GM": (0.06, 0.16),
    "WM": (0.04, 0.10),
    "skull": (None, 0.12),
    "skin": (0.03, 0.17),
}
#: Conductivity table the targets apply to.
TARGET_TABLE = "A"
#: Validation label maps and the unseen synthesis seeds used for them (training used seed 0 with
#: ``default_rng([0, map_index, pair])``; these use ``default_rng(seed)``).
DEFAULT_SYNTHETIC = (("training_seg_17", 9001), ("training_seg_18", 9002))
CASES = ("mni152", "colin27", "synthetic_val")
PLUMBING_NOTE = "plumbing check: T1 used as both inputs (no T2 exists for Colin27); not a result"


def format_range(target: Tuple[Optional[float], Optional[float]]) -> str:
    """``(1.5, None)`` -> ``"≥ 1.5"``, ``(None, 0.12)`` -> ``"≤ 0.12"``, ``(a, b)`` -> ``"a–b"``."""
    low, high = target
    if low is None and high is None:
        raise ValueError("a target needs at least one bound")
    if high is None:
        return f"≥ {low:g}"
    if low is None:
        return f"≤ {high:g}"
    return f"{low:g}–{high:g}"


def judge_targets(table_report: dict, table_name: str) -> dict:
    """PASS/MISS per tissue group of one table of an evaluation report.

    Parameters
    ----------
    table_report : dict
        ``evaluation.report["tables"][name]`` (from :func:`evaluate_prediction`).
    table_name : str
        The conductivity table's name; targets exist for :data:`TARGET_TABLE` only.

    Returns
    -------
    dict
        group -> ``{"target": text or None, "low", "high", "mean", "status"}`` with status ``"PASS"``,
        ``"MISS"``, ``"no voxels"`` (group absent from the labels) or ``"no target"``.
    """
    result = {}
    for group in GROUPS:
        row = table_report["groups"][group]
        mean = row["condnet_mean"]
        target = TARGETS_TABLE_A.get(group) if table_name == TARGET_TABLE else None
        entry = {"target": None, "low": None, "high": None, "mean": mean, "status": "no target"}
        if target is not None:
            low, high = target
            entry.update(target=format_range(target), low=low, high=high)
            if not row["voxels"] or mean is None:
                entry["status"] = "no voxels"
            elif not np.isfinite(mean):
                entry["status"] = "MISS"
            else:
                ok = (low is None or mean >= low) and (high is None or mean <= high)
                entry["status"] = "PASS" if ok else "MISS"
        result[group] = entry
    return result


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (set --shared to the shared data folder)")
    return path


def _downsampled(volume, spacing_mm: Optional[float], interpolation: str = "linear"):
    from CondNetLogic.preprocessing import resample_isotropic

    if spacing_mm is None:
        return volume
    return resample_isotropic(volume, spacing_mm, interpolation=interpolation)


def _integer_labels(volume):
    array = np.asarray(volume.array)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ValueError("label map holds non-integer values")
        array = rounded
    return volume.with_array(array.astype(np.int32))


def load_real_case(name: str, shared: Path, downsample: Optional[float]) -> dict:
    """Inputs of the ``mni152`` or ``colin27`` case (T1, T2, SAMSEG labels, mapping path, notes)."""
    from CondNetLogic.conductivity import resource_path
    from CondNetLogic.io import read_volume

    data = shared / "data" / name
    labels_path = _need(data / "samseg" / "seg.nii.gz", f"{name} SAMSEG segmentation")
    if name == "mni152":
        t1_path = _need(data / "MNI152_T1_2mm.nii.gz", "MNI152 T1")
        t2_path = _need(data / "MNI152_T2_2mm.nii.gz", "MNI152 T2")
        t1, t2 = read_volume(t1_path), read_volume(t2_path)
        title = "MNI152 T1 + T2 (2 mm, real contrast) vs SAMSEG"
        note = "real T1 + T2 pair; SAMSEG labels are pseudo ground truth"
    elif name == "colin27":
        t1_path = _need(data / "colin27_t1_1mm.nii.gz", "Colin27 T1")
        t2_path = t1_path
        t1 = read_volume(t1_path)
        t2 = t1
        title, note = "Colin27 T1 as T1 and T2 vs SAMSEG", PLUMBING_NOTE
    else:
        raise ValueError(f"unknown real case {name!r}")
    original_spacing = [float(s) for s in t1.spacing]
    t1 = _downsampled(t1, downsample)
    t2 = t1 if name == "colin27" else _downsampled(t2, downsample)
    return {
        "name": name, "title": title, "note": note, "t1": t1, "t2": t2,
        "labels": read_volume(labels_path), "mapping": resource_path("tissue_maps", "samseg_labels.csv"),
        "inputs": {"t1": str(t1_path), "t2": str(t2_path), "labels": str(labels_path),
                   "t1_spacing_mm": original_spacing, "downsample_mm": downsample},
    }


def t1_only_case(case: dict) -> dict:
    """The case for T1-only weights: no T2 passed; Colin27 becomes a real result instead of a plumbing check."""
    case = {**case, "t2": None, "inputs": {**case["inputs"], "t2": None}}
    if case["name"] == "colin27":
        case["title"] = "Colin27 T1 (real scan, T1-only weights) vs SAMSEG"
        case["note"] = "real T1 scan with T1-only weights; SAMSEG labels are pseudo ground truth"
    elif case["name"] == "mni152":
        case["title"] = "MNI152 T1 (2 mm, real contrast; T1-only weights) vs SAMSEG"
        case["note"] = "real T1 (its T2 not passed) with T1-only weights; SAMSEG labels are pseudo ground truth"
    else:
        case["title"] += " (T1 only)"
    return case


def read_synth_options(path: Optional[str]) -> tuple:
    """``(SynthOptions, label)``: ``SynthOptions.randomised()``, or the options of a JSON file (a training
    set's ``split.json`` or a bare options dict)."""
    from CondNetLogic.synth import SynthOptions

    if path is None:
        return SynthOptions.randomised(), "SynthOptions.randomised()"
    if not Path(path).is_file():
        raise FileNotFoundError(f"--synth-options file not found: {path}")
    data = json.loads(Path(path).read_text())
    return SynthOptions.from_dict(data["options"] if "options" in data else data), f"options of {path}"


def load_synthetic_case(shared: Path, map_name: str, seed: int, downsample: Optional[float],
                        training_subjects: Optional[Sequence[str]], synth: Optional[tuple] = None) -> dict:
    """A T1/T2 pair synthesised from a validation label map with an unseen seed, and its labels."""
    from CondNetLogic.conductivity import labels_to_tissues, read_label_mapping, resource_path
    from CondNetLogic.io import read_volume
    from CondNetLogic.synth import synthesize_pair
    from CondNetLogic.training_set import map_id
    from CondNetLogic.volume import Volume

    path = _need(shared / "data" / "synthseg_label_maps" / f"{map_name}.nii.gz", f"label map {map_name}")
    mapping_path = resource_path("tissue_maps", "synthseg_labels.csv")
    labels = _integer_labels(read_volume(path))
    spacing = 1.0 if downsample is None else float(downsample)
    if not (labels.is_isotropic and np.allclose(labels.spacing, spacing, atol=1e-4)):
        labels = _integer_labels(_downsampled(labels, spacing, "nearest"))
    tissues = labels_to_tissues(labels.array, read_label_mapping(mapping_path)).astype(np.uint8)
    options, options_label = read_synth_options(None) if synth is None else synth
    tick = time.perf_counter()
    t1, t2, _params = synthesize_pair(tissues, rng=np.random.default_rng(int(seed)), spacing_mm=spacing,
                                      options=options, labels=labels.array)
    seconds = time.perf_counter() - tick
    prefix = map_id(map_name) + "_"
    in_training = None if training_subjects is None else any(s.startswith(prefix) for s in training_subjects)
    note = (f"synthetic pair from validation map {map_name}, unseen seed {seed}, {options_label}; "
            f"map in the weights' training subjects: {'unknown' if in_training is None else in_training}")
    return {
        "name": f"synthetic_val_{map_id(map_name)}_seed{seed}", "title": f"Synthetic pair: {map_name}, seed {seed}",
        "note": note, "t1": Volume(t1, labels.ijk_to_ras), "t2": Volume(t2, labels.ijk_to_ras),
        "labels": labels, "mapping": mapping_path,
        "inputs": {"labels": str(path), "seed": int(seed), "synth_options": options.to_dict(),
                   "synthesis_spacing_mm": spacing, "synthesis_s": seconds, "map_in_training": in_training},
    }


def run_case(case: dict, weights, out_dir: Path, *, device: str, batch_size: int, overwrite: bool,
             precision: str = "auto") -> dict:
    """Predict, evaluate (CondNetLogic.evaluation) and write one case's outputs; returns its summary."""
    from CondNetLogic.conductivity import read_label_mapping
    from CondNetLogic.evaluation import evaluate_prediction, write_report
    from CondNetLogic.inference import predict_conductivity

    mapping = read_label_mapping(case["mapping"])
    tick = time.perf_counter()
    prediction = predict_conductivity(case["t1"], case["t2"], weights=weights, device=device, batch_size=batch_size,
                                      precision=precision)
    predict_s = time.perf_counter() - tick
    tick = time.perf_counter()
    evaluation = evaluate_prediction(prediction, case["labels"], mapping, t1=case["t1"])
    evaluate_s = time.perf_counter() - tick
    tick = time.perf_counter()
    extra = {"case": case["name"], "note": case["note"],
             "inputs": {**case["inputs"], "mapping": str(case["mapping"])}}
    paths = write_report(evaluation, prediction, out_dir / case["name"], t1=case["t1"], t2=case["t2"], extra=extra,
                         overwrite=overwrite)
    report_s = time.perf_counter() - tick
    judged = {name: judge_targets(table, name) for name, table in evaluation.report["tables"].items()}
    timings = {"predict_s": predict_s, "evaluate_s": evaluate_s, "report_s": report_s,
               "prediction_breakdown_s": prediction.info["timings_s"]}
    if "synthesis_s" in case["inputs"]:
        timings["synthesis_s"] = case["inputs"]["synthesis_s"]
    return {
        "name": case["name"], "title": case["title"], "note": case["note"], "inputs": case["inputs"],
        "t1_shape": list(case["t1"].shape), "t1_spacing_mm": [float(s) for s in case["t1"].spacing],
        "report": evaluation.report, "targets": judged, "timings": timings, "device": prediction.info["device"],
        "precision": prediction.info["precision"],
        "t2_used": prediction.info["t2_used"], "fallbacks": prediction.info["fallbacks"],
        "files": {k: str(p.relative_to(out_dir)) for k, p in paths.items()},
    }


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def case_markdown(summary: dict) -> str:
    """One case's section: Table-V-style table per conductivity table with targets and PASS/MISS."""
    lines = [f"## {summary['title']}", ""]
    if summary["note"] == PLUMBING_NOTE:
        lines += [f"**{PLUMBING_NOTE[0].upper() + PLUMBING_NOTE[1:]}.**", ""]
    else:
        lines += [f"_{summary['note']}_", ""]
    head = summary["report"]["head"]
    t = summary["timings"]
    lines.append(f"T1 grid {summary['t1_shape']} at {summary['t1_spacing_mm']} mm; T2 used: {summary['t2_used']}; "
                 f"head voxels {head['voxels_labels']} (labels) / {head['voxels_condnet_mask']} (CondNet mask), "
                 f"Dice {head['dice']:.3f}; skin = outer {head['skin_depth_mm']:g} mm.  "
                 f"Device {summary['device']} ({summary['precision']}); "
                 f"prediction {t['predict_s']:.1f} s, evaluation {t['evaluate_s']:.1f} s, report "
                 f"{t['report_s']:.1f} s" + (f", synthesis {t['synthesis_s']:.1f} s" if "synthesis_s" in t else "")
                 + ".")
    if summary["fallbacks"]:
        lines.append(f"Fallbacks: {'; '.join(summary['fallbacks'])}.")
    lines.append("")
    for name, table in summary["report"]["tables"].items():
        judged = summary["targets"][name]
        passed = sum(j["status"] == "PASS" for j in judged.values())
        judged_count = sum(j["status"] in ("PASS", "MISS") for j in judged.values())
        lines += [f"### Table I ({name}), S/m — targets met: {passed}/{judged_count}", "",
                  "| Tissue | Voxels | CondNet mean ± sd | Interior: mean (voxels) | Table I | Target (issue 7) "
                  "| Result | MAE vs uniform |",
                  "|---|---:|---:|---:|---:|---:|:---:|---:|"]
        for group, row in table["groups"].items():
            table_values = " / ".join(f"{v:.3f}" for v in row["table_values"].values())
            stats = (f"{row['condnet_mean']:.3f} ± {row['condnet_sd']:.3f}" if row["voxels"] else "–")
            j = judged[group]
            interior = interior_cell(row) if row["voxels"] else "–"
            lines.append(f"| {group} | {row['voxels']} | {stats} | {interior} | {table_values} | "
                         f"{j['target'] or '–'} | {j['status'] if j['target'] else '–'} | {_fmt(row['mae'])} |")
        lines += ["", "Interior: the group's voxels whose six face neighbours are in the group too (no border voxel); "
                      "the targets judge the mean over all voxels.",
                  "", f"MAE over the head vs the uniform map: CondNet **{table['mae_condnet_vs_uniform']:.4f} S/m**, "
                      f"constant map (head mean) {table['mae_constant_vs_uniform']:.4f} S/m; mean uncertainty "
                      f"(sd across directions) {table['uncertainty_mean_in_head']:.4f} S/m.", ""]
    figures = [f"`{p}`" for k, p in summary["files"].items() if k.startswith("figure_")]
    lines += [f"Files: `{summary['files']['markdown']}`, `{summary['files']['json']}`, comparison slices "
              f"(T1 | T2 | uniform | CondNet | uncertainty) {', '.join(figures)}.", ""]
    return "\n".join(lines)


def _downsample_notes(downsample_mm: Optional[float]) -> List[str]:
    """Report lines that say a downsampled run is a quick check, not the record."""
    from CondNetLogic.evaluation import SKIN_DEPTH_MM

    if downsample_mm is None:
        return []
    text = (f"**Downsampled run ({downsample_mm:g} mm inputs): a quick check with coarser statistics, not the "
            "numbers for the record.**")
    if downsample_mm >= 2 * SKIN_DEPTH_MM:
        text += (f"  At {downsample_mm:g} mm the skin row is the outermost voxel layer, thicker than the "
                 f"{SKIN_DEPTH_MM:g} mm shell of the full-resolution check.")
    return [text, ""]


def combined_markdown(result: dict) -> str:
    """The whole report: provenance, a summary table, then one section per case."""
    w = result["weights"]
    lines = ["# CondNet check on real scans (issue 7, items 5–6)", "",
             f"Command: `{result['command']}`", "",
             f"Weights: `{w['file']}` (manifest id {w['id'] or '– (not a shipped file)'}), sha256 `{w['sha256']}`, "
             f"directions {', '.join(w['directions'])}, "
             f"tables {', '.join(w['tables'])}, inputs {', '.join(w['input_channels'])}, model grid "
             f"{w['model_size']}³ at 1 mm.", "",
             f"Run: {result['started_utc']} UTC, {result['platform']}, python {result['python']}, torch "
             f"{result['torch']}, threads {result['threads']}, device requested {result['device']}; total "
             f"{result['total_s']:.1f} s.", "",
             "Targets (issue 7, Table I A; no further from Table I than the worst case of the paper's Table V): "
             + ", ".join(f"{g} {format_range(t)}" for g, t in TARGETS_TABLE_A.items())
             + " S/m.  Cerebellum and soft tissue (muscle + fat) have no target.  The labels are automatic "
               "(SAMSEG) or synthetic; skin is the outer 2 mm of the labelled head.", "",
             *(_downsample_notes(result["downsample_mm"])),
             "| Case | Targets met (Table A) | MAE CondNet vs uniform | MAE constant map vs uniform | Prediction s |",
             "|---|:---:|---:|---:|---:|"]
    for summary in result["cases"]:
        tables = summary["report"]["tables"]
        name = TARGET_TABLE if TARGET_TABLE in tables else next(iter(tables))  # weights without Table A: their first
        table = tables[name]
        if name == TARGET_TABLE:
            judged = summary["targets"][TARGET_TABLE]
            met = (f"{sum(j['status'] == 'PASS' for j in judged.values())}/"
                   f"{sum(j['status'] in ('PASS', 'MISS') for j in judged.values())}")
        else:
            met = f"no targets (Table {name})"
        mae, const = f"{table['mae_condnet_vs_uniform']:.4f}", f"{table['mae_constant_vs_uniform']:.4f}"
        label = summary["title"] + (" (plumbing check)" if summary["note"] == PLUMBING_NOTE else "")
        lines.append(f"| {label} | {met} | {mae} | {const} | {summary['timings']['predict_s']:.1f} |")
    lines.append("")
    for summary in result["cases"]:
        lines.append(case_markdown(summary))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="weights file (.safetensors); default: the shipped weights")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"),
                        help="shared data folder (default: ../shared relative to the repository)")
    parser.add_argument("--out", required=True, help="output folder (real_scan_check.md/.json, one folder per case)")
    parser.add_argument("--downsample", type=float, metavar="MM",
                        help="resample inputs (and synthetic label maps) to MM isotropic first, for speed")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="cases to run (default: all)")
    parser.add_argument("--synthetic-maps", nargs="+", default=[m for m, _ in DEFAULT_SYNTHETIC],
                        help="validation label maps for synthetic_val (default: training_seg_17 training_seg_18)")
    parser.add_argument("--synthetic-seeds", nargs="+", type=int, default=[s for _, s in DEFAULT_SYNTHETIC],
                        help="one unseen synthesis seed per map (default: 9001 9002)")
    parser.add_argument("--synth-options", metavar="JSON",
                        help="synthesis options for synthetic_val: a training set's split.json or an options dict "
                             "(default: SynthOptions.randomised())")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass (default 16)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="network precision (CondNetLogic.inference.autocast_dtype; default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


def run(args: argparse.Namespace, command: str) -> dict:
    """Run the selected cases; write OUT/real_scan_check.md and .json; return the result dict."""
    import torch

    from CondNetLogic.weights import load_weights

    started = time.perf_counter()
    out = Path(args.out)
    shared = Path(args.shared)
    if args.downsample is not None and not (np.isfinite(args.downsample) and args.downsample > 0):
        raise ValueError(f"--downsample must be a positive number of mm; got {args.downsample}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    if len(args.synthetic_maps) != len(args.synthetic_seeds):
        raise ValueError(f"--synthetic-maps ({len(args.synthetic_maps)}) and --synthetic-seeds "
                         f"({len(args.synthetic_seeds)}) need one seed per map")
    if not shared.is_dir():
        raise FileNotFoundError(f"shared data folder not found: {shared} (set --shared)")
    report_paths = [out / "real_scan_check.md", out / "real_scan_check.json"]
    existing = [str(p) for p in report_paths if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"outputs exist: {existing}; pass --overwrite to replace them")
    synth = read_synth_options(args.synth_options) if "synthetic_val" in args.cases else None
    weights = load_weights(args.weights)
    training_subjects = weights.header.get("training", {}).get("data", {}).get("train")
    if training_subjects is not None:
        for map_name in args.synthetic_maps if "synthetic_val" in args.cases else ():
            from CondNetLogic.training_set import map_id

            if any(s.startswith(map_id(map_name) + "_") for s in training_subjects):
                raise ValueError(f"{map_name} was used to train these weights ({weights.path.name}); pick "
                                 "validation maps the weights have not seen (--synthetic-maps)")
    cases = []
    for name in args.cases:
        if name == "synthetic_val":
            for map_name, seed in zip(args.synthetic_maps, args.synthetic_seeds):
                cases.append(lambda m=map_name, s=seed: load_synthetic_case(shared, m, s, args.downsample,
                                                                            training_subjects, synth))
        else:
            cases.append(lambda n=name: load_real_case(n, shared, args.downsample))
    summaries = []
    for load in cases:
        case = load()
        if weights.config.in_channels == 1:
            case = t1_only_case(case)
        print(f"[real_scan_check] {case['name']}: {case['title']}", flush=True)
        summaries.append(run_case(case, weights, out, device=args.device, batch_size=args.batch_size,
                                  precision=args.precision, overwrite=args.overwrite))
    described = weights.describe()
    described["model_size"] = int(weights.header["input"].get("size", 256))
    described["training"] = {k: weights.header.get("training", {}).get(k)
                             for k in ("epochs", "epochs_trained", "best_val_loss", "seed")}
    result = {
        "command": command, "weights": described, "shared": str(shared), "downsample_mm": args.downsample,
        "targets_table": TARGET_TABLE, "targets": {g: list(t) for g, t in TARGETS_TABLE_A.items()},
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": args.device, "cases": summaries, "total_s": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    report_paths[0].write_text(combined_markdown(result) + "\n")
    report_paths[1].write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status (2 on a clear input/weights error)."""
    import torch

    from CondNetLogic.errors import WeightsError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "python benchmarks/real_scan_check.py " + " ".join(shlex.quote(a) for a in argv)
    previous = torch.get_num_threads()
    if args.threads is not None and args.threads >= 1:
        torch.set_num_threads(args.threads)
    try:
        result = run(args, command)
    except (FileNotFoundError, FileExistsError, WeightsError, ValueError) as err:
        print(f"real_scan_check: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(previous)
    print(combined_markdown(result))
    print(f"wrote {Path(args.out) / 'real_scan_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
