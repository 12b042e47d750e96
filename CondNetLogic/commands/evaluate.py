"""``condnet evaluate``: CondNet vs the uniform map of a label map (per-tissue table, MAE, comparison figures)."""
from __future__ import annotations

import argparse

from ._network_options import add_network_arguments, network_kwargs

HELP = "CondNet vs a label map: per-tissue conductivity (Table V style), MAE, comparison PNGs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet evaluate``."""
    parser.add_argument("--t1", required=True, help="T1-weighted scan")
    parser.add_argument("--t2", help="T2-weighted scan (required by T1+T2 weights)")
    parser.add_argument("--labels", required=True, help="label map of the same head (any grid)")
    parser.add_argument("--mapping", required=True,
                        help="label->tissue CSV, or 'synthseg' / 'samseg' for the shipped mappings")
    parser.add_argument("--out", required=True, help="output folder: evaluation.json/.md, comparison_<table>.png")
    parser.add_argument("--weights", help="weights file (.safetensors); default: the shipped weights")
    add_network_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    """Predict, compare and write the report."""
    from ..conductivity import label_mapping_path, read_label_mapping
    from ..evaluation import evaluate_prediction, markdown_table, report_paths, tissues_on_grid, write_report
    from ..inference import predict_conductivity
    from ..io import read_volume
    from ..weights import file_sha256, load_weights
    from ._progress import ProgressBar

    mapping_path = label_mapping_path(args.mapping)
    mapping = read_label_mapping(mapping_path)
    t1 = read_volume(args.t1)
    t2 = read_volume(args.t2) if args.t2 else None
    labels = read_volume(args.labels)
    tissues_on_grid(labels, mapping, t1)  # a label map that does not fit fails here, not after the prediction
    weights = load_weights(args.weights, t2_given=args.t2 is not None)
    report_paths(args.out, [table.name for table in weights.tables], overwrite=args.overwrite)  # before the work
    extra = {"inputs": {"t1": args.t1, "t2": args.t2, "labels": args.labels, "mapping": str(mapping_path),
                        "labels_sha256": file_sha256(args.labels)}}
    with ProgressBar("evaluate") as progress:
        prediction = predict_conductivity(t1, t2, weights=weights, progress=progress.stage(0, 85),
                                          **network_kwargs(args))
        progress.stage(85, 100)(0.0, "per-tissue statistics")
        evaluation = evaluate_prediction(prediction, labels, mapping, t1=t1)
        progress.stage(85, 100)(0.5, "report and comparison figures")
        paths = write_report(evaluation, prediction, args.out, t1=t1, t2=t2, extra=extra, overwrite=args.overwrite)
        progress(1.0, "done")
    print(markdown_table(evaluation.report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
