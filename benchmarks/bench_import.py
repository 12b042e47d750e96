"""Start-up cost: importing ``CondNetLogic`` and ``condnet --help``, against importing torch, numba and scipy.

Slicer imports every scripted module when it starts, and the module imports ``CondNetLogic`` lazily; the
command line imports its heavy libraries inside the subcommand that needs them.  This benchmark checks that
both stay cheap, the way skimage's ``benchmark_import_time.py`` does: each statement runs in a fresh
interpreter (nothing cached in ``sys.modules``), repeated, and the median wall time is reported, with the
interpreter's own start-up (``pass``) subtracted.  Peers in the same run: ``import numpy``
(which ``CondNetLogic`` needs, and Slicer has loaded already), and ``import torch``, ``import numba`` and
``import scipy.sparse``, the libraries the heavy commands load; the printed ratio is peer time / our time.

    python benchmarks/bench_import.py              # 7 repeats
    python benchmarks/bench_import.py --repeat 15

asv-style class (``params``, ``param_names``, ``time_*``) for use under asv as well.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

OURS = {
    "import CondNetLogic": "import CondNetLogic",
    "import CondNetLogic.cli": "import CondNetLogic.cli",
    "condnet --help": "import sys; sys.argv = ['condnet', '--help']; import runpy; "
                      "runpy.run_module('CondNetLogic', run_name='__main__')",
}
PEERS = {
    "import numpy": "import numpy",
    "import torch": "import torch",
    "import numba": "import numba",
    "import scipy.sparse": "import scipy.sparse",
}
STATEMENTS = {**OURS, **PEERS}
HEAVY = ("torch", "numba", "scipy", "SimpleITK", "matplotlib", "slicer", "vtk", "qt")


def run_once(statement: str) -> float:
    """Wall time (s) of a fresh interpreter running ``statement``; its output is discarded."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_time(statement: str, repeat: int) -> float:
    """Median over ``repeat`` fresh interpreters (s), after one untimed run that warms the file cache."""
    run_once(statement)
    return statistics.median(run_once(statement) for _ in range(repeat))


def heavy_modules_after(statement: str) -> list:
    """Which of ``HEAVY`` are in ``sys.modules`` after ``statement`` (``--help`` exits, so it is caught)."""
    probe = (f"import contextlib, io, sys\nwith contextlib.redirect_stdout(io.StringIO()):\n"
             f"    try:\n        exec({statement!r})\n    except SystemExit:\n        pass\n"
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return [m for m in out.strip().split(",") if m]


class ImportSuite:
    """asv: time of each statement in a fresh interpreter (interpreter start-up included)."""

    params = (list(STATEMENTS),)
    param_names = ["statement"]
    timeout = 300

    def time_fresh_interpreter(self, name):
        run_once(STATEMENTS[name])


def main(argv=None) -> dict:
    """Measure, print a table and the ratios, and return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per statement (default 7)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    baseline = median_time("pass", args.repeat)
    rows = {}
    for name, statement in STATEMENTS.items():
        rows[name] = {"median_s": median_time(statement, args.repeat) - baseline,
                      "heavy_modules": heavy_modules_after(statement)}

    import CondNetLogic
    import numba
    import scipy
    import torch

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; python {platform.python_version()}; "
          f"CondNetLogic {CondNetLogic.__version__}, torch {torch.__version__}, numba {numba.__version__}, "
          f"scipy {scipy.__version__}; median of {args.repeat} fresh interpreters, "
          f"interpreter start-up {baseline * 1e3:.0f} ms subtracted")
    print(f"{'statement':26s} {'median ms':>10s}  heavy modules loaded")
    for name, row in rows.items():
        print(f"{name:26s} {row['median_s'] * 1e3:10.0f}  {', '.join(row['heavy_modules']) or '-'}")
    ours = rows["import CondNetLogic"]["median_s"]
    cli = rows["condnet --help"]["median_s"]
    for peer in PEERS:
        peer_s = rows[peer]["median_s"]
        print(f"ratio {peer} / import CondNetLogic: {peer_s / max(ours, 1e-4):6.1f}x;   "
              f"{peer} / condnet --help: {peer_s / max(cli, 1e-4):6.1f}x")
    result = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
              "repeat": args.repeat, "startup_s": baseline, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
