"""``condnet train``: train CondNet (one network per slicing direction) on a training-set folder."""
from __future__ import annotations

import argparse

HELP = "train CondNet networks (axial, sagittal, coronal) on a training set; writes a weights file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet train``."""
    parser.add_argument("--data", required=True, help="training-set folder (split.json + subject folders)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, history.csv, loss_curves.png")
    parser.add_argument("--weights", help="output weights (.safetensors); default OUT/condnet.safetensors, or "
                                          "OUT/condnet_<directions>.safetensors when --directions names only some "
                                          "(so directions trained by parallel commands do not collide)")
    parser.add_argument("--preset", choices=("paper", "cpu"), default="paper",
                        help="paper: 50 epochs, all slices (Sec. IV-A); cpu: sized for ~45-60 min on 2 cores")
    parser.add_argument("--directions", nargs="+", choices=("axial", "sagittal", "coronal"),
                        default=["axial", "sagittal", "coronal"], help="networks to train now (default: all)")
    parser.add_argument("--tables", nargs="+", help="Table I columns to predict, e.g. A or A B (default: A)")
    parser.add_argument("--t1-only", action="store_true", help="one input track (T1) instead of T1 + T2")
    parser.add_argument("--depth", type=int, help="network depth I (default 6, as in the paper)")
    parser.add_argument("--size", type=int, help="model grid size in voxels (default 256)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"),
                        help="constant (default, as the paper) or cosine decay to 0 over all epochs")
    parser.add_argument("--loss", choices=("bce", "l1"),
                        help="per-scale loss: bce (default, as the paper) or l1 (sharper at tissue borders)")
    parser.add_argument("--slices-per-epoch", type=int, help="random training slices per epoch")
    parser.add_argument("--val-slices", type=int, help="validation slices evaluated per epoch and set")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--no-amp", action="store_true",
                        help="float32 everywhere; default: bfloat16 autocast on CUDA GPUs since Ampere (float16 "
                             "before them) and on x86-64 CPUs that run it natively")
    parser.add_argument("--cache", help="preprocessed-subject cache folder (default DATA/.condnet_cache)")
    parser.add_argument("--no-resume", action="store_true", help="fail instead of resuming existing checkpoints")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    parser.add_argument("--register", metavar="ID",
                        help="list the weights in Resources/weights.json under ID (give --weights below Resources/, "
                             "e.g. Resources/weights/ID.safetensors; checked before training); weights for Table A "
                             "become the default, others are picked by condnet predict --table")
    parser.add_argument("--weights-version", default="1", help="version recorded with --register")
    parser.add_argument("--max-minutes", type=float,
                        help="time limit per direction: stop after the epoch that would overrun it (best kept)")
    parser.add_argument("--init-weights", metavar="W",
                        help="start from these weights (fine-tuning) instead of a random initialisation")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice; 1 is faster when the CPU is shared)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--combine", action="store_true",
                        help="train nothing: write the finished DIRECTIONS in OUT (each trained by its own command "
                             "with these options) into one weights file")


def default_weights_path(out, directions, *, combine: bool = False):
    """``OUT/condnet.safetensors`` for all directions or ``--combine``, else ``OUT/condnet_<dirs>.safetensors``."""
    from pathlib import Path

    from ..weights import DIRECTIONS

    chosen = [d for d in DIRECTIONS if d in set(directions)]
    if combine or len(chosen) == len(DIRECTIONS):
        return Path(out) / "condnet.safetensors"
    return Path(out) / f"condnet_{'_'.join(chosen)}.safetensors"


def run(args: argparse.Namespace) -> int:
    """Train, write the weights file and (optionally) register it."""
    from pathlib import Path

    import torch

    from ..conductivity import get_table
    from ..network import CondNetConfig
    from ..training import PRESETS, train, with_overrides
    from ..weights import default_roles, manifest_relative_path, read_manifest, register_weights

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    config = with_overrides(
        PRESETS[args.preset], epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        lr_schedule=args.lr_schedule, slices_per_epoch=args.slices_per_epoch, val_slices=args.val_slices,
        seed=args.seed, size=args.size, tables=tuple(args.tables) if args.tables else None, loss=args.loss,
        amp=False if args.no_amp else None,
    )
    network = {"in_channels": 1 if args.t1_only else 2, "out_channels": len(config.tables)}
    if args.depth is not None:
        network["depth"] = args.depth
    weights_path = Path(args.weights) if args.weights else default_weights_path(args.out, args.directions,
                                                                                 combine=args.combine)
    if args.register:  # before the training, not after it
        try:
            manifest_relative_path(weights_path)
        except ValueError as err:
            raise ValueError(f"--register {args.register}: {err}; pass --weights with such a path") from err
    result = train(
        args.data, args.out, weights_path=weights_path, network_config=CondNetConfig(**network), config=config,
        directions=args.directions, device=args.device, cache_dir=args.cache, resume=not args.no_resume,
        overwrite=args.overwrite, show_bar=not args.quiet, max_minutes=args.max_minutes,
        init_weights=args.init_weights, combine_only=args.combine,
    )
    for direction, best in result.best.items():
        print(f"{direction}: best validation loss {best['loss']:.5f} at epoch {best['epoch']}")
    print(f"wrote {result.weights_path} (sha256 {result.sha256})")
    if args.register:
        entry = register_weights(result.weights_path, weights_id=args.register, version=args.weights_version)
        # What register_weights decided: a default (weights for Table A), else weights picked by their table.
        kind = default_roles(read_manifest()).get(entry["id"]) or (
            f"picked by condnet predict --table {' or '.join(get_table(table).name for table in config.tables)}")
        print(f"registered {entry['file']} as {entry['id']!r} ({kind}) in Resources/weights.json")
    return 0
