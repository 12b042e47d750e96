"""SPFD potential solve on a head phantom: our MG-PCG vs pyamg (smoothed aggregation + CG) vs scipy CG.

asv-style class (``params``, ``param_names``, ``setup``, ``time_*``, ``track_*``), also runnable as a
script that prints one table with the machine and versions::

    python benchmarks/bench_solver.py --sizes 64 128
    python benchmarks/bench_solver.py --sizes 256 --skip scipy-cg     # the issue's 256^3 target
    python benchmarks/bench_solver.py --study 64 96                   # coarse_scale / smoother / cycle study
    python benchmarks/bench_solver.py --sizes 64 --torch-device cpu   # dry run of the GPU (torch) code on the CPU
    python benchmarks/bench_solver.py --sizes 256 --markdown rows.md  # also append RESULTS.md table rows to a file

The conductivity is ``CondNetLogic.phantom.make_head_phantom((n, n, n))`` (a 256 mm box at 256/n mm
voxels) mapped through Table I (A): 200x jumps between CSF (2.0 S/m) and cortical bone (0.01-0.02 S/m).
dA/dt is that of a uniform dB/dt of 1e4 T/s tilted from the head axis, ``a = dB/dt x r / 2``, plus a
gradient term; the iteration counts barely depend on it.  Every method solves the same singular system to
the same relative residual ``tol`` (default 1e-6, relative to ``||b||``).  The table gives setup and solve
wall time (solve: median of 3 runs with the same setup; scipy CG: one run), iterations, the final relative
residual recomputed in float64, the peak memory traced by ``tracemalloc`` (numpy allocations; torch CUDA
memory from ``torch.cuda.max_memory_allocated``), the difference of the potential from the solution with
float64 cycles, and the ratio of each solve time to ours (the default: float64 CG preconditioned by
float32 multigrid cycles, numba).  'solve s' is the whole ``PotentialSolver.solve`` call (right-hand side
on the host, copies to and from the device, the host check of the true residual, the copy into the output
array, reused from the previous call as ``EFieldSimulation`` does since 2026-11-27); 'loop s' is the CG loop
alone, on the device (the arrays already there, synchronised before and after).  Memory is traced during the
setup and the untimed first solve only, so ``tracemalloc`` does not slow the timed solves.  Targets (issue 4):
256^3 in <= 2 s on a 2-core CPU and >= 10x faster than pyamg; <= 50 ms on an H100.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
import warnings

import numpy as np

from CondNetLogic.conductivity import TABLE_A, tissues_to_conductivity
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.solver import PotentialSolver, assemble_operator, assemble_rhs

TOL = 1e-6
#: The default solver: float64 CG with float32 multigrid cycles.
OURS = "condnet f64 numba"
#: Solves timed per method (the table gives the median); the scipy CG baseline runs once.
REPEAT = 3


def head_conductivity(size: int) -> tuple:
    """Phantom conductivity (S/m, float32) on ``size^3`` voxels of ``256 / size`` mm, and the spacing (m)."""
    spacing_mm = 256.0 / size
    phantom = make_head_phantom((size,) * 3, seed=0, spacing_mm=spacing_mm)
    sigma = np.asarray(tissues_to_conductivity(phantom.tissues.array, TABLE_A), dtype=np.float32)
    return sigma, spacing_mm * 1e-3


def dadt_faces(shape, spacing_m: float) -> tuple:
    """dA/dt (V/m) at the face midpoints: uniform dB/dt = 1e4 T/s tilted, plus a smooth gradient term."""
    db_dt = 1e4 * np.array([0.3, 0.2, 0.93])
    faces = []
    for axis in range(3):
        face_shape = tuple(n - (d == axis) for d, n in enumerate(shape))
        coords = [(np.arange(n) + (0.5 if d == axis else 0.0) - shape[d] / 2) * spacing_m
                  for d, n in enumerate(face_shape)]
        x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
        r = (x, y, z)
        cross = db_dt[(axis + 1) % 3] * r[(axis + 2) % 3] - db_dt[(axis + 2) % 3] * r[(axis + 1) % 3]
        gradient = 50.0 * np.cos(40.0 * r[axis])
        faces.append(np.broadcast_to(0.5 * cross + gradient, face_shape).astype(np.float32))
    return tuple(faces)


def _peak() -> float:
    """Peak traced host memory (MiB) since ``tracemalloc.start``."""
    return tracemalloc.get_traced_memory()[1] / 2**20


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_condnet(sigma, faces, spacing_m, dtype, cycle_dtype, device="cpu", compile=False, repeat=REPEAT,
                backend="auto", cycle="auto", profile=False) -> dict:
    """Setup, first solve, then ``repeat`` timed solves; with ``profile`` (torch backend) also ``"profile"``:
    torch.profiler's table of the operators of one more solve, by self time on the device (CPU on the CPU)."""
    import torch

    if compile:  # imported here, not inside the traced and timed setup (seconds, and its own memory)
        import torch._dynamo  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401
    if device.startswith("cuda"):
        torch.cuda.init()  # the peak-memory counters refuse a device that is not initialised yet
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tracemalloc.start()
    start = time.perf_counter()
    solver = PotentialSolver(sigma, spacing_m, dtype=dtype, cycle_dtype=cycle_dtype, device=device, compile=compile,
                             cycle=cycle,
                             backend=backend)
    _synchronize(device)
    setup = time.perf_counter() - start
    retained, peak = (value / 2**20 for value in tracemalloc.get_traced_memory())

    def one_iteration() -> float:
        started = time.perf_counter()
        with warnings.catch_warnings():  # one iteration does not converge, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            solver.solve(faces, tol=TOL, maxiter=1)
        _synchronize(solver.device)
        return time.perf_counter() - started

    if compile:
        # tracemalloc slows torch.compile about 3x (measured on the CPU: 17 s -> 54 s at 64^3): compile
        # untraced, then trace a second first-iteration solve on top of what the setup keeps.
        tracemalloc.stop()
        warmup = one_iteration()
        tracemalloc.start()
        one_iteration()
        peak = max(peak, retained + _peak())
    else:
        warmup = one_iteration()  # warm-up: kernel compilation / CUDA context, not timed
        peak = _peak()
    tracemalloc.stop()
    if device.startswith("cuda"):
        peak += torch.cuda.max_memory_allocated() / 2**20
    # The CG loop alone (on the device, synchronised), timed around the solver's own loop.
    loops = []
    iterate = solver._iterate

    def timed_iterate(*args, **kwargs):
        _synchronize(solver.device)
        started = time.perf_counter()
        result = iterate(*args, **kwargs)
        _synchronize(solver.device)
        loops.append(time.perf_counter() - started)
        return result

    solver._iterate = timed_iterate
    times, phases = [], []
    psi = None
    for _ in range(repeat):
        start = time.perf_counter()
        psi, info = solver.solve(faces, tol=TOL, maxiter=200, out=psi)  # reused, as EFieldSimulation does
        _synchronize(solver.device)
        times.append(time.perf_counter() - start)
        phases.append(info["time_phases_s"])
    solver._iterate = iterate  # the profiled solve below is not one of the timed loops
    if info["device"] != device or info["fallbacks"]:
        # A CUDA out-of-memory error moved the work to the CPU: the numbers are not the GPU's.
        raise RuntimeError(f"ran on {info['device']} ({info['backend']}) instead of {device}: {info['fallbacks']}")
    median = int(np.argsort(times)[len(times) // 2])
    table = None
    if profile and solver.backend_name == "torch":
        try:
            table = _profile_solve(solver, faces, psi)
        except Exception as err:  # noqa: BLE001 - a profiler failure must not cost the row its timings
            table = f"profile failed: {type(err).__name__}: {err}"
    return {"setup_s": setup, "solve_s": float(np.median(times)), "loop_s": float(np.median(loops[-repeat:])),
            "phases_s": phases[median], "profile": table,
            "first_s": warmup, "iterations": info["iterations"], "psi": psi, "converged": info["converged"],
            "peak_mib": peak}


def _profile_solve(solver, faces, psi) -> str:
    """torch.profiler's table (12 rows) of one whole ``solve`` on the solver's device."""
    from torch.profiler import ProfilerActivity, profile

    cuda = solver.device.startswith("cuda")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        solver.solve(faces, tol=TOL, maxiter=200, out=psi)
        _synchronize(solver.device)
    return prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                     row_limit=12, max_name_column_width=60)


def _system(sigma, faces, spacing_m):
    """Float64 CSR system for pyamg and scipy: b projected per component, one voxel per component pinned.

    Pinning makes the matrix SPD (pyamg's CG reports an indefinite preconditioner on the singular one);
    the solution is the same up to the constant of each component, removed afterwards.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    matrix, index = assemble_operator(sigma, spacing_m)
    b = assemble_rhs(sigma.astype(np.float64), faces, spacing_m)[index >= 0].astype(np.float64)
    count, labels = connected_components(matrix, directed=False)
    b -= (np.bincount(labels, b, count) / np.bincount(labels, minlength=count))[labels]
    pinned = np.zeros(matrix.shape[0], dtype=bool)
    pinned[np.unique(labels, return_index=True)[1]] = True
    keep = sparse.diags((~pinned).astype(float))
    pinned_matrix = (keep @ matrix @ keep + sparse.diags(pinned.astype(float) * matrix.diagonal().mean())).tocsr()
    b_pinned = np.where(pinned, 0.0, b)
    return matrix, pinned_matrix, b, b_pinned, index, labels


def run_pyamg(matrix, b, maxiter=400, repeat=REPEAT) -> dict:
    import pyamg

    tracemalloc.start()
    start = time.perf_counter()
    ml = pyamg.smoothed_aggregation_solver(matrix, B=np.ones((matrix.shape[0], 1)), symmetry="symmetric")
    setup = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        residuals = []
        start = time.perf_counter()
        x = ml.solve(b, tol=TOL, accel="cg", maxiter=maxiter, residuals=residuals)
        times.append(time.perf_counter() - start)
    solve = float(np.median(times))
    peak = _peak()
    tracemalloc.stop()
    return {"setup_s": setup, "solve_s": solve, "iterations": len(residuals) - 1, "x": x, "peak_mib": peak,
            "converged": residuals[-1] <= TOL * np.linalg.norm(b)}


def run_scipy_cg(matrix, b, maxiter=4000) -> dict:
    from scipy.sparse import diags
    from scipy.sparse.linalg import cg

    tracemalloc.start()
    start = time.perf_counter()
    jacobi = diags(1.0 / matrix.diagonal())
    setup = time.perf_counter() - start
    count = [0]

    def callback(_):
        count[0] += 1

    start = time.perf_counter()
    x, status = cg(matrix, b, rtol=TOL, atol=0.0, maxiter=maxiter, M=jacobi, callback=callback)
    solve = time.perf_counter() - start
    peak = _peak()
    tracemalloc.stop()
    return {"setup_s": setup, "solve_s": solve, "iterations": count[0], "x": x, "peak_mib": peak,
            "converged": status == 0}


def machine() -> str:
    import numba
    import scipy
    import torch

    try:
        import pyamg

        pyamg_version = pyamg.__version__
    except ImportError:
        pyamg_version = "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} CPUs (numba threads {numba.get_num_threads()}), GPU {gpu}; "
            f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"numba {numba.__version__}, torch {torch.__version__}, pyamg {pyamg_version}; "
            f"load average {os.getloadavg()[0]:.1f}")


#: Reference of the 'diff' column: float64 CG with float64 cycles (numba).
REFERENCE = "condnet f64 numba f64cyc"
#: Method names as the tables of benchmarks/RESULTS.md write them.
LABELS = {
    OURS: "ours f64 (numba, f32 cycles)",
    REFERENCE: "f64, f64 cycles (numba)",
    "condnet f32 numba": "f32 (numba)",
    "pyamg SA+CG": "pyamg SA + CG",
    "scipy CG (Jacobi)": "scipy CG (Jacobi)",
}


def _label(name: str) -> str:
    """RESULTS.md name: ``condnet f64 torch cuda`` -> ``f64 (torch cuda, f32 cycles)``."""
    if name in LABELS:
        return LABELS[name]
    words = name.split()  # condnet <dtype> torch <device> [compiled]
    if len(words) >= 4 and words[2] == "torch":
        notes = [f"torch {words[3]}"] + (["f32 cycles"] if words[1] == "f64" else []) + words[4:]
        return f"{words[1]} ({', '.join(notes)})"
    return name


def _seconds(value: float) -> str:
    return f"{value:.4f}" if value < 0.1 else f"{value:.3f}"


MARKDOWN_HEADER = ("|    n | unknowns | method | setup s | solve s | loop s | iters | rel.res | peak MiB | diff "
                   "| solve / ours |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def markdown_row(row: dict) -> str:
    """One row for the tables of benchmarks/RESULTS.md (plus 'loop s', the CG loop alone)."""
    loop = _seconds(row["loop_s"]) if "loop_s" in row else "–"
    return (f"| {row['size']:4d} | {row['unknowns']:,} | {_label(row['method'])} | {_seconds(row['setup_s'])} | "
            f"{_seconds(row['solve_s'])} | {loop} | {row['iterations']} | {row['residual']:.1e} | "
            f"{row['peak_mib']:.0f} | {row['diff']:.0e} | {row['ratio']:.2f} |"
            + ("" if row["converged"] else " NOT CONVERGED"))


def benchmark(size: int, skip=(), torch_devices=None, emit=None, profile=False) -> list:
    """Rows of every method at ``size``; ``emit(row)`` is called for each row as soon as it is complete;
    ``profile`` prints torch.profiler's table of one solve after each torch row's line.

    ``torch_devices``: where the torch backend runs (default: ``["cuda"]`` when torch sees a device); ``"cpu"``
    runs the GPU code path on the CPU (eager only: ``torch.compile`` on the CPU needs a C++ toolchain and
    minutes of compilation).
    """
    import torch

    if torch_devices is None:
        torch_devices = ["cuda"] if torch.cuda.is_available() else []
    sigma, spacing_m = head_conductivity(size)
    faces = dadt_faces(sigma.shape, spacing_m)
    # The float64 system first: every row's true residual is computed as soon as its method has run.
    matrix, pinned_matrix, b, b_pinned, index, labels = _system(sigma, faces, spacing_m)
    b_norm = np.linalg.norm(b)
    # (name, dtype of CG and solution, dtype of the multigrid cycles, device, torch.compile, backend, cycle); the
    # first is the default, the second the reference of 'diff'.
    methods = [(OURS, np.float64, np.float32, "cpu", False, "numba", "auto"),
               (REFERENCE, np.float64, np.float64, "cpu", False, "numba", "auto"),
               ("condnet f32 numba", np.float32, np.float32, "cpu", False, "numba", "auto")]
    for device in torch_devices:
        # The torch default is the F-cycle (8 iterations at 256^3); V-cycles (12), the default before, run half as
        # many iterations again with fewer coarse-level launches each.
        methods += [(f"condnet f64 torch {device}", np.float64, np.float32, device, False, "torch", "auto"),
                    (f"condnet f32 torch {device}", np.float32, np.float32, device, False, "torch", "auto"),
                    (f"condnet f64 torch {device} V-cycle", np.float64, np.float32, device, False, "torch", "V")]
        if device.startswith("cuda"):
            methods += [(f"condnet f64 torch {device} compiled", np.float64, np.float32, device, True, "torch", "auto"),
                        (f"condnet f64 torch {device} V-cycle compiled", np.float64, np.float32, device, True, "torch",
                         "V")]
    methods = [m for m in methods if f"condnet-{m[3].split(':')[0]}" not in skip]
    results, rows = {}, []
    pending = []

    def finish(name: str, result: dict) -> None:
        psi = result.pop("psi")
        x = psi[index >= 0].astype(np.float64)
        result["residual"] = float(np.linalg.norm(b - matrix @ x) / b_norm)
        result["psi"] = psi
        results[name] = result
        pending.append(name)
        reference = results.get(REFERENCE)
        if any(m[0] == REFERENCE for m in methods) and reference is None:
            return  # rows wait for the reference solution
        if any(m[0] == OURS for m in methods) and OURS not in results:
            return  # ... and for the time of ours
        ours = results.get(OURS, results[next(iter(results))])["solve_s"]
        for waiting in pending:
            done = results[waiting]
            diff = (float(np.linalg.norm(done["psi"] - reference["psi"]) / np.linalg.norm(reference["psi"]))
                    if reference is not None else float("nan"))
            row = {"size": size, "unknowns": int(matrix.shape[0]), "method": waiting,
                   **{k: v for k, v in done.items() if k != "psi"}, "diff": diff, "ratio": done["solve_s"] / ours}
            rows.append(row)
            if emit is not None:
                emit(row)
        pending.clear()

    for name, dtype, cycle_dtype, device, compile, backend, cycle in methods:
        try:
            result = run_condnet(sigma, faces, spacing_m, dtype, cycle_dtype, device, compile, backend=backend,
                                 cycle=cycle, profile=profile)
        except Exception as err:  # noqa: BLE001 - a failed GPU variant (compiler missing, out of memory) is reported
            if device == "cpu" and backend == "numba":
                raise
            print(f"{size:4d} {name}: failed: {type(err).__name__}: {err}", flush=True)
            continue
        steps = ", ".join(f"{step} {1e3 * seconds:.1f}" for step, seconds in result["phases_s"].items())
        print(f"{size:4d} {name}: setup {result['setup_s']:.3f} s, first solve (warm-up, maxiter 1) "
              f"{result['first_s']:.3f} s, solve {result['solve_s']:.4f} s, CG loop {result['loop_s']:.4f} s, "
              f"{result['iterations']} iterations; steps of the median solve (ms): {steps}", flush=True)
        table = result.pop("profile")
        if table:
            print(f"{size:4d} {name}: profile of one solve\n{table}", flush=True)
        finish(name, result)
    for name, runner in (("pyamg SA+CG", run_pyamg), ("scipy CG (Jacobi)", run_scipy_cg)):
        if name.split()[0].lower() + ("-cg" if "scipy" in name else "") in skip:
            continue
        try:
            result = runner(pinned_matrix, b_pinned)
        except ImportError as err:
            print(f"{size:4d} {name}: skipped: {err}", flush=True)
            continue
        x = result.pop("x")
        for component in range(labels.max() + 1):
            x[labels == component] -= x[labels == component].mean()
        psi = np.zeros(sigma.shape)
        psi[index >= 0] = x
        result["psi"] = psi
        finish(name, result)
    return rows


def study(sizes) -> None:
    """Iterations and solve time of MG-PCG variants (the measurements behind the defaults)."""
    variants = [("V", 0.5, 1), ("V", 0.5, 2), ("W", 0.5, 2), ("F", 0.5, 2), ("W", 1.0, 2), ("V", 1.0, 2),
                ("W", 0.6, 2)]
    print(f"{'size':>5} {'cycle':>5} {'scale':>6} {'sweeps':>6} {'iters':>6} {'solve s':>8}")
    for size in sizes:
        sigma, spacing_m = head_conductivity(size)
        faces = dadt_faces(sigma.shape, spacing_m)
        for cycle, scale, sweeps in variants:
            solver = PotentialSolver(sigma, spacing_m, dtype=np.float32, cycle=cycle, coarse_scale=scale,
                                     smoother=("sor", {"omega": 1.15, "sweeps": sweeps}))
            solver.solve(faces, tol=TOL, maxiter=1)
            start = time.perf_counter()
            _, info = solver.solve(faces, tol=TOL, maxiter=200)
            print(f"{size:5d} {cycle:>5} {scale:6.2f} {sweeps:6d} {info['iterations']:6d} "
                  f"{time.perf_counter() - start:8.3f}", flush=True)


class SolverSuite:
    """asv: MG-PCG solve time and iterations against grid size and dtype."""

    params = ([64, 128], ["float32", "float64"])
    param_names = ["size", "dtype"]

    def setup(self, size, dtype):
        self.sigma, self.spacing_m = head_conductivity(size)
        self.faces = dadt_faces(self.sigma.shape, self.spacing_m)
        self.solver = PotentialSolver(self.sigma, self.spacing_m, dtype=np.dtype(dtype))
        self.solver.solve(self.faces, tol=TOL, maxiter=1)

    def time_solve(self, size, dtype):
        self.solver.solve(self.faces, tol=TOL)

    def time_setup(self, size, dtype):
        PotentialSolver(self.sigma, self.spacing_m, dtype=np.dtype(dtype))

    def track_iterations(self, size, dtype):
        return self.solver.solve(self.faces, tol=TOL)[1]["iterations"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="grid sizes n (n^3 voxels), >= 64")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="methods to leave out: condnet-cpu, condnet-cuda, pyamg, scipy-cg")
    parser.add_argument("--torch-device", nargs="*", default=None, metavar="DEVICE",
                        help="where the torch backend rows run (default: cuda when torch sees a device, else none); "
                             "'cpu' runs the GPU code path on the CPU, eager (a dry run)")
    parser.add_argument("--markdown", help="also append the rows, as in benchmarks/RESULTS.md, to this file")
    parser.add_argument("--study", type=int, nargs="*", help="run the variant study at these sizes instead")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's table of one solve of each torch row (where the loop's "
                             "time goes)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    description = machine()
    print(description, flush=True)
    if args.study:
        study(args.study)
        return 0
    header = (f"{'n':>4} {'unknowns':>9} {'method':32s} {'setup s':>8} {'solve s':>8} {'loop s':>8} {'iters':>5} "
              f"{'rel.res':>8} {'conv':>4} {'peak MiB':>8} {'diff':>8} {'solve/ours':>10}")
    print(f"tolerance {TOL:g} (relative to ||b||); 'diff' = ||psi - psi_f64|| / ||psi_f64|| against float64 "
          f"cycles (f64cyc); ours = {OURS} (the default: float64 CG, float32 cycles); 'loop s' = the CG loop "
          "alone (no host right-hand side, copies or residual check)")
    print(header, flush=True)
    markdown = []

    def append_markdown(lines) -> None:
        if args.markdown:
            with open(args.markdown, "a") as handle:
                handle.write("\n".join(lines) + "\n")

    append_markdown(["", f"bench_solver.py --sizes {' '.join(map(str, args.sizes))}: {description}", "",
                     MARKDOWN_HEADER])

    def emit(row: dict) -> None:
        loop = f"{row['loop_s']:8.4f}" if "loop_s" in row else f"{'-':>8}"
        print(f"{row['size']:4d} {row['unknowns']:9d} {row['method']:32s} {row['setup_s']:8.3f} "
              f"{row['solve_s']:8.4f} {loop} {row['iterations']:5d} {row['residual']:8.1e} "
              f"{'yes' if row['converged'] else 'NO':>4} {row['peak_mib']:8.0f} {row['diff']:8.1e} "
              f"{row['ratio']:10.2f}", flush=True)
        markdown.append(markdown_row(row))
        append_markdown([markdown[-1]])

    for size in args.sizes:
        benchmark(size, skip=set(args.skip), torch_devices=args.torch_device, emit=emit, profile=args.profile)
    print("\nRows for benchmarks/RESULTS.md:\n" + MARKDOWN_HEADER + "\n" + "\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
