"""The options that run the CondNet networks, shared by ``condnet predict`` and ``condnet evaluate``."""
from __future__ import annotations

import argparse


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision``, ``--batch-size`` and ``--register``."""
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    # The choices of inference.PRECISIONS, spelt out: the CLI builds every parser at start-up, before any heavy import.
    parser.add_argument("--precision", default="auto", choices=("auto", "float32"),
                        help="auto: float16 on CUDA and bfloat16 on CPUs that run it natively (up to 2x faster, "
                             "0.001 S/m from float32 on average); float32: float32 everywhere (default: auto)")
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default: 64 on a GPU, 16 on the CPU)")
    parser.add_argument("--register", action="store_true", help="rigidly register T2 to T1 first")


def network_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`~CondNetLogic.inference.predict_conductivity` from those options."""
    return {"device": args.device, "precision": args.precision, "batch_size": args.batch_size,
            "register": args.register}
