"""The torch (GPU) path, run on the CPU: identical to the numba path to the rounding of the dtype.

The same torch code runs on CUDA; tests marked ``gpu`` repeat the comparison there when a device exists.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CondNetLogic.solver import PotentialSolver  # noqa: E402
from CondNetLogic.solver import multigrid as mg  # noqa: E402
from CondNetLogic.solver.spfd import validate_dadt_faces  # noqa: E402
from CondNetLogic.solver.torch_backend import TorchBackend  # noqa: E402

H = 1e-3
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def sigma_with_jumps(shape=(19, 16, 13), seed=0):
    rng = np.random.default_rng(seed)
    centre = (np.array(shape) - 1) / 2
    radius = np.sqrt((((np.indices(shape).T - centre) / (np.array(shape) / 2)) ** 2).sum(-1)).T
    sigma = np.where(radius < 0.95, 0.43, 0.0)
    sigma[radius < 0.8] = 0.01
    sigma[radius < 0.7] = 2.0
    sigma[radius < 0.6] = 0.2
    sigma *= rng.uniform(0.8, 1.2, size=shape)
    sigma[rng.random(shape) < 0.05] = 0.0
    return sigma


def faces_for(shape, seed=1):
    rng = np.random.default_rng(seed)
    faces = []
    for axis in range(3):
        face_shape = tuple(n - (d == axis) for d, n in enumerate(shape))
        x, y, z = np.indices(face_shape) * H
        faces.append([-y, x, 0.3 * x * y / H][axis] * 50 + rng.normal(0, 0.01, face_shape))
    return tuple(faces)


def backends(dtype, shape=(11, 9, 8)):
    """A numba and a torch-on-CPU backend over the same hierarchy."""
    solver = PotentialSolver(sigma_with_jumps(shape), H, dtype=dtype, cycle_dtype=dtype, max_coarse=20)
    cells, pinv = mg.coarse_pseudo_inverse(solver.levels[-1].w)
    return (solver, mg.NumbaBackend(solver.levels, solver.dtype, cells, pinv),
            TorchBackend(solver.levels, solver.dtype, cells, pinv, "cpu"))


def both(array, torch_backend):
    return array.copy(), torch_backend.from_numpy(array)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
class TestPrimitives:
    def test_sweep_residual_apply(self, dtype):
        solver, numba_backend, torch_backend = backends(dtype)
        rng = np.random.default_rng(2)
        shape = solver.levels[0].shape
        x, xt = both(rng.standard_normal(shape).astype(dtype), torch_backend)
        # The solver's invariant: b vanishes on cells without a conductive face.
        b_host = rng.standard_normal(shape) * mg._conductive_cells(solver.levels[0].w)
        b, bt = both(b_host.astype(dtype), torch_backend)
        for color in (0, 1, 1, 0):
            numba_backend.sweep(0, x, b, 1.2, color)
            torch_backend.sweep(0, xt, bt, 1.2, color)
        np.testing.assert_allclose(torch_backend.to_numpy(xt), x, atol=TOLERANCE[dtype] * np.abs(x).max())
        r, rt = np.zeros(shape, dtype), torch_backend.zeros(shape)
        rr, rrt = numba_backend.residual(0, x, b, r), torch_backend.residual(0, xt, bt, rt)
        np.testing.assert_allclose(torch_backend.to_numpy(rt), r, atol=TOLERANCE[dtype] * np.abs(r).max())
        assert rrt == pytest.approx(rr, rel=1e-4)
        y, yt = np.zeros(shape, dtype), torch_backend.zeros(shape)
        xy, xyt = numba_backend.apply(0, x, y), torch_backend.apply(0, xt, yt)
        np.testing.assert_allclose(torch_backend.to_numpy(yt), y, atol=TOLERANCE[dtype] * np.abs(y).max())
        assert xyt == pytest.approx(xy, rel=1e-4)

    def test_transfers_and_coarse_solve(self, dtype):
        solver, numba_backend, torch_backend = backends(dtype)
        rng = np.random.default_rng(3)
        fine, coarse = solver.levels[0].shape, solver.levels[1].shape
        rf = rng.standard_normal(fine).astype(dtype)
        rc, rct = np.zeros(coarse, dtype), torch_backend.zeros(coarse)
        numba_backend.restrict(0, rf, rc)
        torch_backend.restrict(0, torch_backend.from_numpy(rf), rct)
        np.testing.assert_allclose(torch_backend.to_numpy(rct), rc, atol=TOLERANCE[dtype] * 10)
        xf, xft = both(rf, torch_backend)
        numba_backend.prolong_add(0, rc, xf)
        torch_backend.prolong_add(0, rct, xft)
        np.testing.assert_allclose(torch_backend.to_numpy(xft), xf, atol=TOLERANCE[dtype] * 10)
        last = len(solver.levels) - 1
        shape = solver.levels[last].shape
        b, bt = both(rng.standard_normal(shape).astype(dtype), torch_backend)
        x, xt = np.zeros(shape, dtype), torch_backend.zeros(shape)
        numba_backend.coarse_solve(last, x, b)
        torch_backend.coarse_solve(last, xt, bt)
        np.testing.assert_allclose(torch_backend.to_numpy(xt), x, atol=TOLERANCE[dtype] * np.abs(x).max())

    def test_vector_operations(self, dtype):
        _, numba_backend, torch_backend = backends(dtype)
        rng = np.random.default_rng(4)
        arrays = [rng.standard_normal((5, 6, 7)).astype(dtype) for _ in range(4)]
        host = [a.copy() for a in arrays]
        dev = [torch_backend.from_numpy(a) for a in arrays]
        assert torch_backend.dot(dev[0], dev[1]) == pytest.approx(numba_backend.dot(host[0], host[1]), rel=1e-5)
        assert torch_backend.cg_update(*dev, 0.3) == pytest.approx(numba_backend.cg_update(*host, 0.3), rel=1e-5)
        numba_backend.cg_direction(host[2], host[3], 0.7)
        torch_backend.cg_direction(dev[2], dev[3], 0.7)
        for h_array, d_array in zip(host, dev):
            np.testing.assert_allclose(torch_backend.to_numpy(d_array), h_array, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cycle", ["V", "W", "F"])
def test_full_solve_matches_numba(dtype, cycle):
    sigma = sigma_with_jumps()
    faces = faces_for(sigma.shape)
    results = {}
    for backend in ("numba", "torch"):
        solver = PotentialSolver(sigma, H, dtype=dtype, cycle_dtype=dtype, backend=backend, cycle=cycle,
                                 max_coarse=30)
        results[backend] = solver.solve(faces, tol=1e-6)
    (psi_numba, info_numba), (psi_torch, info_torch) = results["numba"], results["torch"]
    assert info_torch["backend"] == "torch"
    assert info_torch["device"] == "cpu"
    assert psi_torch.dtype == dtype
    assert info_torch["converged"]
    assert abs(info_torch["iterations"] - info_numba["iterations"]) <= (1 if dtype == np.float32 else 0)
    error = np.abs(psi_torch - psi_numba).max() / np.abs(psi_numba).max()
    assert error < (1e-5 if dtype == np.float32 else 1e-12)


def test_float32_products_of_smooth_vectors_keep_their_digits():
    """A float32 backend that runs CG takes ``L x`` and ``b - L x`` from neighbour differences, as the numba
    kernels do: for a smooth ``x`` far from zero, ``sum_f w_f x_q - d x`` cancels all but a few digits."""
    solver, _, _ = backends(np.float32)
    shape = solver.levels[0].shape
    x_host = (100.0 + np.indices(shape).sum(0) * 1e-3).astype(np.float32)  # smooth, |x| >> |L x| / d
    b_host = np.random.default_rng(3).standard_normal(shape).astype(np.float32) * 1e-3
    exact = TorchBackend(solver.levels[:1], np.float64, None, None, "cpu")
    x64, b64, y64, r64 = (exact.from_numpy(x_host), exact.from_numpy(b_host), exact.zeros(shape), exact.zeros(shape))
    exact.apply(0, x64, y64)
    exact.residual(0, x64, b64, r64)
    errors = {}
    for differences in (True, False):
        backend = TorchBackend(solver.levels[:1], np.float32, None, None, "cpu", differences=differences)
        x, b, y, r = backend.from_numpy(x_host), backend.from_numpy(b_host), backend.zeros(shape), backend.zeros(shape)
        backend.apply(0, x, y)
        backend.residual(0, x, b, r)
        errors[differences] = [float((computed.double() - reference).abs().max() / reference.abs().max())
                               for computed, reference in ((y, y64), (r, r64))]
    assert max(errors[True]) < 1e-5, errors
    assert min(errors[False]) > 1e-3, errors  # what the sum form loses here


def test_float32_solve_reaches_the_float64_solution_as_numba_does():
    """All-float32 MG-PCG on a smooth head-sized potential: the torch backend's solution is as close to the
    float64 one as numba's (with the sum form: 5.4e-6 against numba's 8.5e-8 here; at 256^3 no convergence)."""
    from CondNetLogic.conductivity import TABLE_A, tissues_to_conductivity
    from CondNetLogic.phantom import make_head_phantom

    phantom = make_head_phantom((48,) * 3, seed=0, spacing_mm=4.0)
    sigma = np.asarray(tissues_to_conductivity(phantom.tissues.array, TABLE_A), dtype=np.float32)
    faces = faces_for(sigma.shape)
    reference, _ = PotentialSolver(sigma, 4e-3, cycle_dtype=np.float64).solve(faces, tol=1e-10)
    errors = {}
    for backend in ("numba", "torch"):
        psi, info = PotentialSolver(sigma, 4e-3, dtype=np.float32, backend=backend, cycle="W").solve(faces, tol=1e-6)
        assert info["converged"]
        errors[backend] = np.linalg.norm(psi - reference) / np.linalg.norm(reference)
    assert errors["torch"] < 2 * errors["numba"] + 1e-7, errors


def test_mixed_precision_matches_numba():
    """float64 CG with float32 cycles: both backends reach the same float64 solution."""
    sigma = sigma_with_jumps()
    faces = faces_for(sigma.shape)
    solutions = [PotentialSolver(sigma, H, backend=backend, cycle="F", max_coarse=30).solve(faces, tol=1e-10)
                 for backend in ("numba", "torch")]
    (psi_numba, info_numba), (psi_torch, info_torch) = solutions
    assert psi_torch.dtype == np.float64
    assert info_torch["converged"]
    assert info_numba["converged"]
    assert abs(info_torch["iterations"] - info_numba["iterations"]) <= 1
    assert np.abs(psi_torch - psi_numba).max() / np.abs(psi_numba).max() < 1e-8


@pytest.mark.parametrize("device", ["cpu", "cpu-mirrored", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_islands_warm_start_and_reuse_match_numba(device):
    """The solve's ends on the backend: per-island projection, true residual, warm start, buffers reused.

    ``cpu-mirrored`` copies through separate host buffers, as on CUDA (there page-locked)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from CondNetLogic.solver import conductor_components

    sigma = sigma_with_jumps()
    sigma[9] = 0.0  # two halves, each with its own floating potential (plus isolated voxels)
    faces = faces_for(sigma.shape)
    psi_numba, info_numba = PotentialSolver(sigma, H, backend="numba", max_coarse=30).solve(faces, tol=1e-10)
    solver = PotentialSolver(sigma, H, backend="torch", device=device.split("-")[0], max_coarse=30)
    if device == "cpu-mirrored":
        solver._backend._mirrors = solver._outer._mirrors = {}
    assert solver.components >= 2
    psi, info = solver.solve(faces, tol=1e-10)
    scale = np.abs(psi_numba).max()
    assert np.abs(psi - psi_numba).max() < 1e-8 * scale
    assert info["true_residual"] < 1e-9
    assert info_numba["true_residual"] < 1e-9
    labels, count = conductor_components(sigma)
    assert np.all(psi[labels == 0] == 0)
    assert max(abs(psi[labels == c].mean()) for c in range(1, count + 1)) < 1e-12 * scale
    again, info_again = solver.solve(faces, tol=1e-10, x0=psi)
    assert info_again["iterations"] == 0
    assert np.abs(again - psi).max() < 1e-14 * scale  # projected once more
    twice, _ = solver.solve(tuple(2 * face for face in faces), tol=1e-10)
    assert np.abs(twice - 2 * psi).max() < 1e-8 * scale
    assert np.abs(again - psi).max() < 1e-14 * scale  # results do not share memory with the solver's buffers
    assert (solver._outer._mirrors is None) == (device == "cpu")


@pytest.mark.parametrize("face_dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("mirrored", [False, True])
def test_rhs_from_faces_matches_the_host_divergence(face_dtype, mirrored):
    """The torch backend's right-hand side (faces sent over, summed on the device) is the host kernel's, also where
    the conductor touches the grid's border and with NaN/inf on faces that do not conduct."""
    sigma = sigma_with_jumps((11, 9, 8))
    solver = PotentialSolver(sigma, H, max_coarse=20)
    assert np.any(solver._lo < 0)  # the working grid overhangs the input
    # As the solver passes them: validate_dadt_faces turns integer faces into float64 ones.
    faces = list(validate_dadt_faces([(face * 1e3).astype(face_dtype) for face in faces_for(sigma.shape)],
                                     sigma.shape, check_finite=False))
    insulating = np.nonzero((sigma[:-1] == 0) | (sigma[1:] == 0))
    assert insulating[0].size
    if face_dtype != np.int64:
        faces[0][tuple(axis[:2] for axis in insulating)] = [np.nan, np.inf]
    numba_backend = mg.NumbaBackend([solver.operator], np.float64)
    torch_backend = TorchBackend([solver.operator], np.float64, None, None, "cpu")
    if mirrored:
        torch_backend._mirrors = {}  # separate host buffers, as on CUDA (there page-locked)
    expected = np.zeros(solver.operator.shape)
    numba_backend.rhs(faces, solver._lo, H, expected)
    assert np.all(np.isfinite(expected))
    assert np.abs(expected).max() > 0
    b = torch_backend.zeros(solver.operator.shape)
    for _ in range(2):  # the second call reuses the face buffers
        torch_backend.rhs(faces, solver._lo, H, b)
        np.testing.assert_allclose(b.numpy(), expected, rtol=0, atol=1e-15 * np.abs(expected).max())


def test_cast_and_dot_pair_match_numba():
    solver, numba_backend, torch_backend = backends(np.float64)
    rng = np.random.default_rng(5)
    shape = solver.levels[0].shape
    conductive = mg._conductive_cells(solver.levels[0].w)
    a, b, c = (rng.standard_normal(shape) * conductive for _ in range(3))
    expected = (float(np.sum(a * b)), float(np.sum(c * b)))
    assert numba_backend.dot_pair(a, b, c) == pytest.approx(expected, rel=1e-12)
    assert torch_backend.dot_pair(*(torch_backend.from_numpy(v) for v in (a, b, c))) == pytest.approx(expected,
                                                                                                      rel=1e-12)
    host = np.zeros(shape, dtype=np.float32)
    numba_backend.cast(0, a, host)
    device = torch.zeros(shape, dtype=torch.float32)
    torch_backend.cast(0, torch_backend.from_numpy(a), device)
    np.testing.assert_array_equal(host, a.astype(np.float32))
    np.testing.assert_array_equal(device.numpy(), host)


class _OutOfMemoryOnCuda(TorchBackend):
    """The torch backend on the CPU, posing as CUDA: runs out of memory where ``fail_in`` says."""

    fail_in = "init"

    def __init__(self, levels, dtype, cells, pinv, device, **options):
        assert device == "cuda"
        if self.fail_in == "init":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        super().__init__(levels, dtype, cells, pinv, "cpu", **options)

    def sweep(self, level, x, b, omega, color):
        if self.fail_in == "sweep":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        super().sweep(level, x, b, omega, color)


@pytest.mark.parametrize("fail_in", ["init", "sweep"])
def test_cuda_out_of_memory_falls_back_to_the_cpu(monkeypatch, fail_in):
    from CondNetLogic.solver import torch_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(_OutOfMemoryOnCuda, "fail_in", fail_in)
    monkeypatch.setattr(torch_backend, "TorchBackend", _OutOfMemoryOnCuda)
    sigma = sigma_with_jumps()
    faces = faces_for(sigma.shape)
    reference, _ = PotentialSolver(sigma, H, max_coarse=30).solve(faces, tol=1e-8)
    solver = PotentialSolver(sigma, H, device="auto", max_coarse=30)
    assert (solver.device, solver.backend_name) == (("cpu", "numba") if fail_in == "init" else ("cuda", "torch"))
    residuals = []
    psi, info = solver.solve(faces, tol=1e-8, residuals=residuals)
    assert (info["device"], info["backend"], solver.cycle) == ("cpu", "numba", "W")
    assert info["converged"]
    assert len(info["fallbacks"]) == 1
    assert "CUDA out of memory" in info["fallbacks"][0]
    assert "continuing on the CPU" in info["fallbacks"][0]
    assert residuals == info["residuals"]
    assert residuals[0] == pytest.approx(1.0)
    np.testing.assert_allclose(psi, reference, atol=1e-9 * np.abs(reference).max())


def test_errors_other_than_out_of_memory_are_not_swallowed(monkeypatch):
    from CondNetLogic.solver import torch_backend

    class Broken(TorchBackend):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch_backend, "TorchBackend", Broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        PotentialSolver(sigma_with_jumps(), H, device="auto", max_coarse=30)


def test_cuda_request_without_device_raises():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        PotentialSolver(sigma_with_jumps(), H, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("gpu", "cpu", "tol", "bound"),
    [
        pytest.param({"dtype": np.float32, "device": "cuda"}, {"dtype": np.float32}, 1e-6, 1e-5, id="float32"),
        # The default on a GPU: float64 CG with float32 cycles, the same float64 solution as the numba backend.
        pytest.param({"device": "auto"}, {}, 1e-10, 1e-8, id="float64-cg-float32-cycles"),
    ],
)
def test_cuda_matches_numba(gpu, cpu, tol, bound):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    sigma = sigma_with_jumps((40, 36, 33))
    faces = faces_for(sigma.shape)
    psi_gpu, info = PotentialSolver(sigma, H, **gpu).solve(faces, tol=tol)
    psi_cpu, info_cpu = PotentialSolver(sigma, H, backend="numba", **cpu).solve(faces, tol=tol)
    assert (info["device"], info["backend"], info["fallbacks"]) == ("cuda", "torch", [])
    assert psi_gpu.dtype == psi_cpu.dtype == np.dtype(gpu.get("dtype", np.float64))
    assert info["converged"]
    assert info_cpu["converged"]
    assert np.abs(psi_gpu - psi_cpu).max() / np.abs(psi_cpu).max() < bound


@pytest.mark.gpu
def test_cuda_graph_cycles_match_eager_cycles():
    """The multigrid cycle replayed from a CUDA graph computes what the eager cycle does, solve after solve."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    sigma = sigma_with_jumps((40, 36, 33))
    faces = faces_for(sigma.shape)
    graphed = PotentialSolver(sigma, H, device="cuda")
    eager = PotentialSolver(sigma, H, device="cuda")
    eager._backend.graphs = False
    psi, info = graphed.solve(faces, tol=1e-10)
    assert graphed._work["graph"][2] is not None
    reference, info_eager = eager.solve(faces, tol=1e-10)
    assert "graph" not in eager._work
    assert info["converged"]
    assert info["iterations"] == info_eager["iterations"]
    scale = np.abs(reference).max()
    assert np.abs(psi - reference).max() < 1e-9 * scale
    again, _ = graphed.solve([2 * face for face in faces], tol=1e-10)  # the same graph, new right-hand side
    assert np.abs(again - 2 * reference).max() < 1e-8 * scale


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "bound"), [(np.float32, 1e-5), (np.float64, 1e-9)])
def test_compiled_torch_matches_eager(dtype, bound):
    """Compiled cycles (and, with float64 CG over float32 cycles, the compiled float64 operator of CG) give
    the eager solution."""
    sigma = sigma_with_jumps((12, 11, 10))
    faces = faces_for(sigma.shape)
    tol = 1e-6 if dtype == np.float32 else 1e-10
    eager, _ = PotentialSolver(sigma, H, dtype=dtype, backend="torch").solve(faces, tol=tol)
    solver = PotentialSolver(sigma, H, dtype=dtype, backend="torch", compile=True)
    compiled, info = solver.solve(faces, tol=tol)
    from CondNetLogic.solver import torch_backend

    assert solver._outer._apply is not torch_backend._apply_interior  # compiled
    assert info["converged"]
    assert np.abs(compiled - eager).max() / np.abs(eager).max() < bound


def _bench_solver():
    """``benchmarks/bench_solver.py`` as a module (the GPU check runs it; its torch path is tested here)."""
    from _benchmarks import load_benchmark

    return load_benchmark("bench_solver")


def test_solver_benchmark_times_the_torch_path_on_the_cpu():
    """The benchmark's GPU rows, run on the CPU: the CG loop alone is timed, and the row fits RESULTS.md."""
    bench = _bench_solver()
    sigma = sigma_with_jumps()
    faces = faces_for(sigma.shape)
    result = bench.run_condnet(sigma, faces, H, np.float64, np.float32, "cpu", backend="torch", repeat=2,
                               profile=True)
    assert result["converged"]
    assert 0 < result["loop_s"] <= result["solve_s"]
    assert result["psi"].dtype == np.float64
    assert "Self CPU" in result["profile"]  # torch.profiler's table of one solve (the GPU check prints it)
    assert "aten::" in result.pop("profile")
    row = {"size": 64, "unknowns": 43023, "method": "condnet f64 torch cuda", **result, "residual": 8.6e-7,
           "diff": 1e-11, "ratio": 0.05}
    cells = bench.markdown_row(row).split(" | ")
    assert cells[:3] == ["|   64", "43,023", "f64 (torch cuda, f32 cycles)"]
    assert len(cells) == bench.MARKDOWN_HEADER.splitlines()[0].count("|") - 1
    assert bench._label("condnet f32 torch cuda compiled") == "f32 (torch cuda, compiled)"
    assert bench._label(bench.OURS) == "ours f64 (numba, f32 cycles)"


def test_solver_benchmark_refuses_a_cuda_row_that_ran_on_the_cpu(monkeypatch):
    """A CUDA out-of-memory fallback must not be reported as a GPU time."""
    from CondNetLogic.solver import torch_backend

    bench = _bench_solver()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("init", "synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args, **kwargs: 0)
    monkeypatch.setattr(_OutOfMemoryOnCuda, "fail_in", "sweep")
    monkeypatch.setattr(torch_backend, "TorchBackend", _OutOfMemoryOnCuda)
    sigma = sigma_with_jumps()
    with pytest.raises(RuntimeError, match="ran on cpu .numba. instead of cuda"):
        bench.run_condnet(sigma, faces_for(sigma.shape), H, np.float64, np.float32, "cuda", repeat=1)
