"""``condnet predict``: T1 (+ T2) -> CondNet conductivity (S/m), uncertainty and head mask on the T1 grid."""
from __future__ import annotations

import argparse

from ._network_options import add_network_arguments, network_kwargs

HELP = "T1 (+T2) -> CondNet conductivity (S/m) and its spread across slicing directions, on the T1 grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet predict``."""
    parser.add_argument("--t1", required=True, help="T1-weighted scan (NIfTI/NRRD/MHA); outputs use its grid")
    parser.add_argument("--t2", help="T2-weighted scan of the same head (required by T1+T2 weights)")
    parser.add_argument("--out", required=True,
                        help="conductivity of the first table, e.g. sigma.nii.gz; beside it go sigma_sd.nii.gz "
                             "(uncertainty), sigma_mask.nii.gz, sigma_<table>[_sd].nii.gz for further tables "
                             "and the sidecar sigma.json")
    parser.add_argument("--weights", help="weights file (.safetensors); default: the shipped weights (T1 + T2, or "
                                          "T1 only when no --t2 is given and such weights are installed)")
    parser.add_argument("--table", help="Table I column to predict, A or B (or a custom table's name): picks the "
                                        "shipped weights that predict it, and writes only it (default: every table "
                                        "of the weights, the default weights predicting A)")
    parser.add_argument("--save-directions", action="store_true",
                        help="also write each slicing direction's own conductivity, sigma_axial.nii.gz, "
                             "sigma_sagittal.nii.gz, sigma_coronal.nii.gz (sigma_<table>_<direction> for further "
                             "tables): an ensemble for condnet efield --ensemble")
    add_network_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def output_paths(out: str, tables, directions=()) -> dict:
    """Output files for ``--out``, the table names and the directions to write:
    {"conductivity": {name: path}, "uncertainty": ..., "directions": {name: {direction: path}}, ...}."""
    from pathlib import Path

    path = Path(out)
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(ext):
            stem, suffix = name[: -len(ext)], ext
            break
    else:
        raise ValueError(f"--out must end in .nii.gz, .nii, .nrrd, .mha or .mhd; got {out!r}")
    folder = path.parent
    paths = {"conductivity": {}, "uncertainty": {}, "directions": {}}
    for n, table in enumerate(tables):
        base = stem if n == 0 else f"{stem}_{table}"
        paths["conductivity"][table] = folder / f"{base}{suffix}"
        paths["uncertainty"][table] = folder / f"{base}_sd{suffix}"
        if directions:
            paths["directions"][table] = {direction: folder / f"{base}_{direction}{suffix}" for direction in directions}
    paths["head_mask"] = folder / f"{stem}_mask{suffix}"
    paths["sidecar"] = folder / f"{stem}.json"
    every = [*paths["conductivity"].values(), *paths["uncertainty"].values(), paths["head_mask"],
             *(path for per_table in paths["directions"].values() for path in per_table.values())]
    if len(set(every)) != len(every):  # e.g. a second table named "sd" would be the first one's uncertainty
        clashes = sorted({str(path) for path in every if every.count(path) > 1})
        raise ValueError(f"the tables {list(tables)} give two outputs the same file name ({', '.join(clashes)}); "
                         "rename a table or predict one with --table")
    return paths


def run(args: argparse.Namespace) -> int:
    """Predict and write the volumes and the JSON sidecar."""
    import json
    import time

    from ..conductivity import TABLES
    from ..inference import predict_conductivity
    from ..io import check_outputs, read_volume, removed_on_error, write_text, write_volume
    from ..weights import load_weights
    from ._progress import ProgressBar

    table = args.table.upper() if args.table and args.table.upper() in TABLES else args.table  # a/b as convert
    requested = [table] if table else None
    weights = load_weights(args.weights, t2_given=args.t2 is not None, tables=requested)
    tables = requested or [t.name for t in weights.tables]
    paths = output_paths(args.out, tables, weights.directions if args.save_directions else ())
    every = [*paths["conductivity"].values(), *paths["uncertainty"].values(), paths["head_mask"], paths["sidecar"],
             *(path for per_table in paths["directions"].values() for path in per_table.values())]
    check_outputs(every, overwrite=args.overwrite)  # before the work: existing files, unwritable folders
    t1 = read_volume(args.t1)
    t2 = read_volume(args.t2) if args.t2 else None
    started = time.perf_counter()
    with ProgressBar("predict") as progress:
        prediction = predict_conductivity(t1, t2, weights=weights, progress=progress,
                                          keep_directions=args.save_directions, **network_kwargs(args))
    written = {"conductivity": {}, "uncertainty": {}}  # write_volume creates the folder
    with removed_on_error() as files:  # all outputs or none (a full disk leaves no half set behind)
        for kind in ("conductivity", "uncertainty"):
            for table in tables:
                volume = getattr(prediction, kind)[table]
                files.append(write_volume(volume, paths[kind][table], overwrite=args.overwrite, like=args.t1))
                written[kind][table] = str(files[-1])
        files.append(write_volume(prediction.head_mask, paths["head_mask"], overwrite=args.overwrite,
                                   like=args.t1))
        written["head_mask"] = str(files[-1])
        for table, per_direction in paths["directions"].items():
            written.setdefault("directions", {})[table] = {}
            for direction, path in per_direction.items():
                files.append(write_volume(prediction.directions[table][direction], path, overwrite=args.overwrite,
                                          like=args.t1))
                written["directions"][table][direction] = str(files[-1])
        sidecar = {
            "command": "condnet predict",
            "inputs": {"t1": str(args.t1), "t2": args.t2, "register": args.register},
            "outputs": written,
            "units": {"conductivity": "S/m", "uncertainty": "S/m (sd across slicing directions)"},
            **prediction.info,
            "wall_time_s": time.perf_counter() - started,
        }
        files.append(write_text(paths["sidecar"], json.dumps(sidecar, indent=2) + "\n", overwrite=args.overwrite))
    for table, path in written["conductivity"].items():
        print(f"wrote {path} (table {table}, S/m)")
    print(f"wrote {paths['sidecar']} (device {prediction.info['device']}, {prediction.info['precision']}, "
          f"{prediction.info['timings_s']['total']:.1f} s)")
    return 0
