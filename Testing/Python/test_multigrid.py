"""MG-PCG solver of the SPFD potential: equals a sparse direct solve, grid-independent iterations, API."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.sparse.linalg import spsolve

from CondNetLogic.errors import Cancelled
from CondNetLogic.solver import PotentialSolver, assemble_operator, assemble_rhs, electric_field, solve_potential
from CondNetLogic.solver.multigrid import coarse_pseudo_inverse

H = 1e-3


def shell_sigma(n, seed=0):
    """Head-like sphere: scalp 0.43, skull 0.01/0.02, CSF 2.0, brain 0.1-0.3 S/m, +-20 % noise, in air."""
    rng = np.random.default_rng(seed)
    centre = (n - 1) / 2
    radius = np.sqrt(((np.indices((n, n, n)) - centre) ** 2).sum(0)) / (n / 2)
    sigma = np.zeros((n, n, n))
    for outer, value in [(0.95, 0.43), (0.85, 0.01), (0.78, 0.02), (0.72, 2.0)]:
        sigma[radius < outer] = value
    brain = radius < 0.65
    sigma[brain] = rng.uniform(0.1, 0.3, size=int(brain.sum()))
    sigma *= rng.uniform(0.8, 1.2, size=sigma.shape)
    return sigma


def smooth_faces(shape, h=H):
    """dA/dt of a uniform dB/dt along z plus smooth extra terms, at the face midpoints (V/m)."""
    faces = []
    for axis in range(3):
        face_shape = tuple(n - (d == axis) for d, n in enumerate(shape))
        x, y, z = np.indices(face_shape).astype(float) * h
        [x, y, z][axis] += h / 2
        x, y, z = x - shape[0] * h / 2, y - shape[1] * h / 2, z - shape[2] * h / 2
        value = [-y + 0.3 * np.sin(20 * z), x + 0.2 * z, 0.5 * np.cos(10 * x) * y][axis]
        faces.append(100.0 * value)
    return tuple(faces)


def direct_solve(sigma, faces, h=H):
    """Float64 sparse direct solve, one potential pinned per component, then zero mean per component."""
    from scipy.sparse.csgraph import connected_components

    matrix, index = assemble_operator(sigma, h)
    b = assemble_rhs(sigma, faces, h)[index >= 0]
    count, labels = connected_components(matrix, directed=False)
    first = np.unique(labels, return_index=True)[1]
    matrix = matrix.tolil()
    for row in first:
        matrix[row, :] = 0
        matrix[:, row] = 0
        matrix[row, row] = 1.0
        b[row] = 0.0
    x = spsolve(matrix.tocsr(), b)
    for component in range(count):
        x[labels == component] -= x[labels == component].mean()
    psi = np.zeros(sigma.shape)
    psi[index >= 0] = x
    return psi


def random_sigma_with_holes(shape, seed=0):
    rng = np.random.default_rng(seed)
    sigma = rng.choice([0.01, 0.43, 2.0], size=shape) * rng.uniform(0.5, 1.5, size=shape)
    sigma[rng.random(shape) < 0.1] = 0.0  # air holes
    return sigma


@pytest.mark.parametrize(("dtype", "cycle_dtype"), [(np.float64, np.float32), (np.float64, np.float64),
                                                    (np.float32, np.float32)])
def test_equals_sparse_direct_solve(dtype, cycle_dtype):
    sigma = random_sigma_with_holes((14, 17, 12))
    faces = smooth_faces(sigma.shape)
    expected = direct_solve(sigma, faces)
    solver = PotentialSolver(sigma, H, dtype=dtype, cycle_dtype=cycle_dtype, max_coarse=50)
    assert len(solver.levels) >= 3
    psi, info = solver.solve(faces, tol=1e-10 if dtype == np.float64 else 1e-7, maxiter=200)
    assert psi.dtype == dtype
    assert info["converged"]
    error = np.linalg.norm(psi - expected) / np.linalg.norm(expected)
    assert error < (1e-8 if dtype == np.float64 else 1e-5)
    field = electric_field(psi, sigma, faces, H)
    reference = electric_field(expected, sigma, faces, H)
    assert np.linalg.norm(field - reference) / np.linalg.norm(reference) < (1e-8 if dtype == np.float64 else 1e-5)


def test_head_like_shells_equal_direct_solve():
    sigma = shell_sigma(20)
    faces = smooth_faces(sigma.shape)
    psi, info = solve_potential(sigma, faces, H, tol=1e-10, maxiter=200)
    expected = direct_solve(sigma, faces)
    assert np.linalg.norm(psi - expected) / np.linalg.norm(expected) < 1e-7
    assert info["true_residual"] < 1e-9


def test_separate_islands_each_float():
    sigma = np.zeros((16, 12, 12))
    sigma[1:7, 2:10, 2:10] = 0.3
    sigma[9:15, 1:11, 3:9] = 2.0
    sigma[12, 5, 5] = 0.0
    sigma[8, 0, 0] = 0.1  # a single-voxel island: no face current, zero potential and field
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H, max_coarse=10)
    assert solver.components == 3
    psi, info = solver.solve(faces, tol=1e-10)
    assert info["converged"]
    np.testing.assert_allclose(psi, direct_solve(sigma, faces), atol=1e-9 * np.abs(psi).max())
    assert abs(psi[1:7].sum()) < 1e-9 * np.abs(psi).max() * psi.size
    assert psi[8, 0, 0] == 0.0
    assert np.all(electric_field(psi, sigma, faces, H)[8, 0, 0] == 0)


def random_rotation(seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("psi_dtype", [np.float64, np.float32])
def test_solver_electric_field_equals_reference(psi_dtype):
    # conductive voxels on the grid's border: the working box reaches outside the input (offset -1)
    sigma = random_sigma_with_holes((9, 11, 8), seed=3)
    sigma[4, :, :] = 0.0  # an insulating plane: two islands, faces across it carry no current
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H, dtype=psi_dtype, max_coarse=20)
    psi, _ = solver.solve(faces, tol=1e-6)
    rotation = random_rotation()
    reference = electric_field(psi.astype(np.float64), sigma, faces, H) @ rotation.T
    big = np.full((11, 13, 10, 3), np.nan)
    out = big[1:-1, 1:-1, 1:-1]  # a strided view, written in full
    magnitude = np.full(sigma.shape, np.nan)
    result, size = solver.electric_field(psi, faces, rotation=rotation, out=out, magnitude=magnitude)
    assert result is out
    assert size is magnitude
    np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-12 * np.abs(reference).max())
    np.testing.assert_allclose(magnitude, np.linalg.norm(reference, axis=-1), rtol=1e-12)
    assert np.all(np.isnan(big[0]))
    assert np.all(out[sigma == 0] == 0)
    field32, size32 = solver.electric_field(psi, faces)  # float32 along the voxel axes by default
    assert field32.dtype == size32.dtype == np.float32
    np.testing.assert_allclose(field32, reference @ rotation, rtol=1e-5, atol=1e-6 * np.abs(reference).max())


def test_solver_electric_field_rejects_bad_arrays():
    sigma = shell_sigma(8)
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H)
    psi = np.zeros(sigma.shape)
    with pytest.raises(ValueError, match="shape"):
        solver.electric_field(psi[:-1], faces)
    with pytest.raises(TypeError, match="float32 or float64"):
        solver.electric_field(psi.astype(int), faces)
    with pytest.raises(ValueError, match="3 x 3"):
        solver.electric_field(psi, faces, rotation=np.eye(4))
    with pytest.raises(ValueError, match="out must be"):
        solver.electric_field(psi, faces, out=np.zeros(sigma.shape))
    locked = np.zeros(sigma.shape, dtype=np.float32)
    locked.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        solver.electric_field(psi, faces, magnitude=locked)
    with pytest.raises(ValueError, match="dadt_faces"):
        solver.electric_field(psi, faces[:2] + (faces[2][:, :, :-1],))


def test_coarse_pseudo_inverse_is_moore_penrose():
    sigma = np.zeros((7, 6, 5))
    sigma[1:3, 1:5, 1:4] = 1.0
    sigma[4:6, 1:5, 1:4] = np.linspace(0.01, 2.0, 24).reshape(2, 4, 3)
    solver = PotentialSolver(sigma, H, max_coarse=5000)
    w = solver.operator.w
    cells, pinv = coarse_pseudo_inverse(w)
    matrix, index = assemble_operator(np.pad(sigma, 1), H)
    assert np.array_equal(np.sort(index[index >= 0]), np.arange(cells.size))
    np.testing.assert_allclose(pinv, np.linalg.pinv(matrix.toarray() * H**2), atol=1e-10 * np.abs(pinv).max())


@pytest.mark.parametrize(("cycle", "bound"), [("W", 10), ("F", 10), ("V", 16)])
def test_iterations_bounded_and_grid_independent(cycle, bound):
    counts = {}
    for n in (24, 48):
        sigma = shell_sigma(n)
        solver = PotentialSolver(sigma, H * 24 / n, cycle=cycle, max_coarse=200)
        _, info = solver.solve(smooth_faces(sigma.shape, H * 24 / n), tol=1e-6)
        assert info["converged"]
        counts[n] = info["iterations"]
    assert max(counts.values()) <= bound, counts
    assert abs(counts[48] - counts[24]) <= 2, counts


@pytest.mark.parametrize(("cycle", "accel", "coarse_scale"), [("V", "cg", 0.5), ("W", None, 0.5),
                                                              ("V", None, 1.0), ("W", "cg", 1.0),
                                                              ("F", "cg", 0.5), ("F", None, 0.5)])
def test_cycle_variants_converge(cycle, accel, coarse_scale):
    sigma = shell_sigma(20)
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H, cycle=cycle, accel=accel, coarse_scale=coarse_scale,
                             smoother=("gauss_seidel", {"sweeps": 2}), max_coarse=100)
    history = []
    psi, info = solver.solve(faces, tol=1e-8, maxiter=200, residuals=history)
    assert info["converged"], info["residuals"][-5:]
    assert history == info["residuals"]
    assert history[-1] <= 1e-8
    assert len(history) == info["iterations"] + 1
    np.testing.assert_allclose(psi, direct_solve(sigma, faces), atol=1e-6 * np.abs(psi).max())


@pytest.mark.parametrize(("cycle", "visits"), [("V", [1, 1, 1, 1]), ("W", [1, 2, 4, 4]), ("F", [1, 2, 3, 3])])
def test_cycle_visits_each_level_as_its_definition_says(cycle, visits):
    """Per cycle, level k is smoothed 1 (V), 2^k (W) or k + 1 (F: an F-cycle then a V-cycle below) times; the
    coarsest level is solved once per visit of the level above it."""
    solver = PotentialSolver(shell_sigma(24), H, cycle=cycle, max_coarse=100)
    assert len(solver.levels) == 4
    backend = solver._backend
    counts = [0] * 4
    sweep, coarse_solve = backend.sweep, backend.coarse_solve

    def counting_sweep(level, x, b, omega, color):
        counts[level] += color == 0  # four red half-sweeps per visit: two pre- and two post-smoothing sweeps
        sweep(level, x, b, omega, color)

    def counting_coarse_solve(level, x, b):
        counts[level] += 4  # one solve per visit, counted as the four half-sweeps of a smoothed level
        coarse_solve(level, x, b)

    backend.sweep, backend.coarse_solve = counting_sweep, counting_coarse_solve
    _, info = solver.solve(smooth_faces(solver.shape), tol=1e-6)
    cycles = info["iterations"]  # CG preconditions before each iteration, and not after the last
    assert [count // (4 * cycles) for count in counts] == visits
    assert all(count % (4 * cycles) == 0 for count in counts)


def test_auto_cycle_is_w_on_numba_and_f_on_torch():
    assert PotentialSolver(shell_sigma(8), H).cycle == "W"
    pytest.importorskip("torch")
    assert PotentialSolver(shell_sigma(8), H, backend="torch").cycle == "F"
    assert PotentialSolver(shell_sigma(8), H, backend="torch", cycle="V").cycle == "V"


def test_conductor_touching_the_grid_edge_and_offset_box():
    sigma = np.zeros((12, 10, 9))
    sigma[0:7, 3:10, 2:6] = 0.5
    sigma[0:3, 3:6, 2:4] = 0.02
    faces = smooth_faces(sigma.shape)
    psi, _ = solve_potential(sigma, faces, H, tol=1e-10)
    np.testing.assert_allclose(psi, direct_solve(sigma, faces), atol=1e-9 * np.abs(psi).max())
    assert np.all(psi[sigma == 0] == 0)


def test_warm_start_and_zero_rhs():
    sigma = shell_sigma(12)
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H)
    psi, _ = solver.solve(faces, tol=1e-10)
    again, info = solver.solve(faces, tol=1e-8, x0=psi)
    assert info["iterations"] == 0
    assert info["converged"]
    assert info["warm_start"]
    np.testing.assert_allclose(again, psi, atol=1e-12 * np.abs(psi).max())
    # What the operator cannot see does not matter: values on air and a constant added to the conductor.
    shifted = np.where(sigma > 0, psi + 0.7 * np.abs(psi).max(), 1e6)
    again, info = solver.solve(faces, tol=1e-8, x0=shifted)
    assert (info["iterations"], info["warm_start"]) == (0, True)
    np.testing.assert_allclose(again, psi, atol=1e-12 * np.abs(psi).max())
    cold = solver.solve(faces, tol=1e-8)[1]
    worse = np.random.default_rng(0).normal(size=psi.shape) * 1e3 * np.abs(psi).max()  # worse than zero: dropped
    restarted, info = solver.solve(faces, tol=1e-8, x0=worse)
    assert not info["warm_start"]
    assert info["iterations"] == cold["iterations"]
    np.testing.assert_allclose(restarted, solver.solve(faces, tol=1e-8)[0], atol=1e-12 * np.abs(psi).max())
    zero, info = solver.solve(tuple(np.zeros_like(face) for face in faces))
    assert info["converged"]
    assert np.all(zero == 0)


def test_output_array_is_filled_in_full_and_may_be_the_warm_start():
    sigma = shell_sigma(12)
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H)
    expected, _ = solver.solve(faces, tol=1e-10)
    out = np.full(sigma.shape, np.nan)  # every cell is written, air included
    psi, _ = solver.solve(faces, tol=1e-10, out=out)
    assert psi is out
    np.testing.assert_array_equal(psi, expected)
    half = [0.5 * face for face in faces]
    again, info = solver.solve(half, tol=1e-10, x0=0.5 * out, out=out)  # x0 is read before out is written
    assert again is out
    assert info["warm_start"]
    assert info["iterations"] == 0
    np.testing.assert_allclose(again, 0.5 * expected, atol=1e-9 * np.abs(expected).max())
    for bad in (np.zeros(sigma.shape, np.float32), np.zeros((12, 12, 11)), np.zeros(sigma.shape)[:, :, ::-1],
                np.zeros(sigma.shape).tolist()):
        with pytest.raises(ValueError, match="out must be"):
            solver.solve(faces, out=bad)
    frozen = np.zeros(sigma.shape)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out must be"):
        solver.solve(faces, out=frozen)


def test_callback_and_cancel():
    sigma = shell_sigma(12)
    faces = smooth_faces(sigma.shape)
    solver = PotentialSolver(sigma, H)
    seen = []
    solver.solve(faces, callback=lambda iteration, residual: seen.append((iteration, residual)))
    assert [i for i, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][1] <= 1e-6
    with pytest.raises(Cancelled):
        solver.solve(faces, cancel=lambda: True)


def test_setup_reports_progress_and_can_be_cancelled():
    """A GUI repaints between the setup's stages (each coarse level among them) and can stop it there."""
    sigma = shell_sigma(24)
    seen = []
    solver = PotentialSolver(sigma, H, max_coarse=100, progress=lambda fraction, message: seen.append((fraction,
                                                                                                      message)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] >= 0.0
    assert fractions[-1] <= 1.0
    assert sum(m.startswith("coarse level") for _, m in seen) == len(solver.levels) - 1 >= 2
    asked = []
    with pytest.raises(Cancelled, match="setup"):
        PotentialSolver(sigma, H, max_coarse=100, cancel=lambda: asked.append(1) or len(asked) == 3)
    assert len(asked) == 3


def test_non_convergence_warns_and_reports():
    sigma = shell_sigma(16)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, info = PotentialSolver(sigma, H).solve(smooth_faces(sigma.shape), tol=1e-12, maxiter=2)
    assert not info["converged"]
    assert info["iterations"] == 2
    assert info["residual"] > 1e-12


def test_float32_cycles_cost_no_iterations():
    """Mixed precision (float64 CG, float32 cycles) converges like float64 cycles, far below float32 rounding."""
    sigma = shell_sigma(24)
    faces = smooth_faces(sigma.shape)
    mixed = PotentialSolver(sigma, H, max_coarse=100).solve(faces, tol=1e-11)
    double = PotentialSolver(sigma, H, cycle_dtype=np.float64, max_coarse=100).solve(faces, tol=1e-11)
    assert mixed[1]["converged"]
    assert mixed[1]["true_residual"] < 1e-10
    assert mixed[1]["iterations"] <= double[1]["iterations"] + 1
    assert np.linalg.norm(mixed[0] - double[0]) / np.linalg.norm(double[0]) < 1e-9


def test_repr_lists_levels():
    solver = PotentialSolver(shell_sigma(20), H, max_coarse=100)
    text = repr(solver)
    assert "float64 (float32 cycles)" in text
    assert f"Number of levels: {len(solver.levels)}" in text
    for level in solver.levels:
        assert "x".join(map(str, level.shape)) in text
        assert str(level.unknowns) in text


def test_info_fields_and_float32_agreement():
    sigma = shell_sigma(16)
    faces = smooth_faces(sigma.shape)
    psi64, info = solve_potential(sigma, faces, H, tol=1e-8)
    psi32, info32 = solve_potential(sigma.astype(np.float32), faces, H, dtype=np.float32, tol=1e-6)
    for key in ("iterations", "residual", "converged", "residuals", "time_setup_s", "time_solve_s", "device"):
        assert key in info
    assert info["device"] == "cpu"
    assert info32["converged"]
    assert np.linalg.norm(psi32 - psi64) / np.linalg.norm(psi64) < 1e-5
    # The call's steps, timed one after the other inside it.
    phases = info["time_phases_s"]
    assert list(phases) == ["check", "rhs", "iterate", "finish", "pull", "embed"]
    assert all(seconds >= 0 for seconds in phases.values())
    assert sum(phases.values()) <= info["time_solve_s"]


class TestBadInput:
    def test_nan_sigma(self):
        sigma = shell_sigma(8)
        sigma[4, 4, 4] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            PotentialSolver(sigma, H)

    def test_negative_sigma(self):
        with pytest.raises(ValueError, match=">= 0"):
            solve_potential(-shell_sigma(8), smooth_faces((8, 8, 8)), H)

    def test_empty_conductor(self):
        with pytest.raises(ValueError, match="no conductive voxel"):
            PotentialSolver(np.zeros((6, 6, 6)), H)

    def test_face_shape_mismatch(self):
        solver = PotentialSolver(shell_sigma(8), H)
        with pytest.raises(ValueError, match="dadt_faces"):
            solver.solve(smooth_faces((8, 8, 9)))

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    @pytest.mark.parametrize("backend", ["numba", "torch"])
    def test_nonfinite_faces_in_the_head(self, bad, backend):
        """A NaN/inf face between conductive voxels is refused by the solve and by the field; one in air is never
        read and changes nothing."""
        if backend == "torch":
            pytest.importorskip("torch")
        sigma = shell_sigma(10)
        solver = PotentialSolver(sigma, H, backend=backend)
        faces = smooth_faces(sigma.shape)
        psi, _ = solver.solve(faces, tol=1e-10)
        inside = tuple(face.copy() for face in faces)
        inside[1][5, 4, 5] = bad
        with pytest.raises(ValueError, match="NaN/inf"):
            solver.solve(inside)
        with pytest.raises(ValueError, match="NaN/inf"):
            solver.electric_field(psi, inside)
        with pytest.raises(ValueError, match="NaN/inf"):
            solver.electric_field(np.where(sigma > 0, np.nan, psi), faces)
        in_air = tuple(face.copy() for face in faces)
        assert sigma[0, 0, 0] == sigma[0, 0, 1] == 0  # the face between them is in air
        in_air[2][0, 0, 0] = bad
        again, _ = solver.solve(in_air, tol=1e-10)
        np.testing.assert_array_equal(again, psi)
        np.testing.assert_array_equal(solver.electric_field(again, in_air)[0], solver.electric_field(psi, faces)[0])

    def test_x0_dtype_and_shape(self):
        solver = PotentialSolver(shell_sigma(8), H, dtype=np.float32)
        faces = smooth_faces((8, 8, 8))
        with pytest.raises(TypeError, match="float32"):
            solver.solve(faces, x0=np.zeros((8, 8, 8)))
        with pytest.raises(ValueError, match="shape"):
            solver.solve(faces, x0=np.zeros((8, 8, 7), dtype=np.float32))

    @pytest.mark.parametrize(("options", "error"), [
        ({"dtype": np.int32}, TypeError), ({"dtype": np.float16}, TypeError), ({"cycle_dtype": "half"}, TypeError),
        ({"cycle_dtype": np.float16}, TypeError), ({"cycle": "AMLI"}, ValueError),
        ({"accel": "gmres"}, ValueError), ({"smoother": "sor"}, TypeError),
        ({"smoother": ("jacobi", {})}, ValueError), ({"smoother": ("sor", {"omega": 2.5})}, ValueError),
        ({"smoother": ("gauss_seidel", {"omega": 1.2})}, ValueError), ({"coarse_scale": 0}, ValueError),
        ({"max_coarse": 0}, ValueError), ({"max_coarse": 10**6}, ValueError), ({"device": "tpu"}, ValueError),
        ({"backend": "cupy"}, ValueError),
        ({"device": "cuda", "backend": "numba"}, ValueError), ({"compile": True}, ValueError),
    ])
    def test_bad_options(self, options, error):
        with pytest.raises(error):
            PotentialSolver(shell_sigma(8), H, **options)

    @pytest.mark.parametrize(("tol", "maxiter"), [(0.0, 10), (1.5, 10), (1e-6, 0)])
    def test_bad_tolerance(self, tol, maxiter):
        solver = PotentialSolver(shell_sigma(8), H)
        with pytest.raises(ValueError, match="tol|maxiter"):
            solver.solve(smooth_faces((8, 8, 8)), tol=tol, maxiter=maxiter)


@pytest.mark.parametrize(("torch_version", "imports_torch"), [("9.9.9+cpu", False), (None, False), ("9.9.9", True)])
def test_auto_device_imports_torch_only_where_its_build_may_have_cuda(torch_version, imports_torch):
    # In a fresh interpreter: importing torch costs about 2 s of every `condnet efield` on a CPU-only install.
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = (
        "import sys\n"
        "from importlib import metadata\n"
        "real = metadata.version\n"
        "def version(name):\n"
        "    if name != 'torch':\n"
        "        return real(name)\n"
        f"    if {torch_version!r} is None:\n"
        "        raise metadata.PackageNotFoundError(name)\n"
        f"    return {torch_version!r}\n"
        "metadata.version = version\n"
        "import numpy as np\n"
        "from CondNetLogic.solver import PotentialSolver\n"
        "sigma = np.ones((6, 6, 6)); sigma[0] = sigma[-1] = 0\n"
        "solver = PotentialSolver(sigma, 1e-3, device='auto')\n"
        "print(solver.device, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if imports_torch:
        import torch

        assert out == [("cuda" if torch.cuda.is_available() else "cpu"), "True"]
    else:
        assert out == ["cpu", "False"]


def test_auto_device_without_cuda_runs_numba():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: auto picks it (covered by the GPU tests)")
    solver = PotentialSolver(shell_sigma(8), H, device="auto")
    assert solver.device == "cpu"
    assert solver.backend_name == "numba"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = solver.solve(smooth_faces((8, 8, 8)))
    assert info["device"] == "cpu"


def test_true_residual_is_recomputed_from_the_potential():
    """info["true_residual"] is ||b - A psi|| / ||b|| of the returned psi, not CG's recursive residual: in float32
    at a tolerance below float32 rounding the two differ several-fold."""
    sigma = shell_sigma(16)
    faces = smooth_faces(sigma.shape)
    psi, info = PotentialSolver(sigma, H, dtype=np.float32).solve(faces, tol=1e-7, maxiter=60)
    matrix, index = assemble_operator(sigma, H)
    b = assemble_rhs(sigma, faces, H)[index >= 0]
    expected = np.linalg.norm(b - matrix @ psi.astype(np.float64)[index >= 0]) / np.linalg.norm(b)
    assert info["true_residual"] == pytest.approx(expected, rel=0.05)
    assert info["residual"] == info["residuals"][-1]


def test_zero_rhs_reports_its_residual_history():
    """A zero right-hand side gives psi = 0 with no iteration, and the history still starts with the initial
    residual (0), as for every other solve."""
    sigma = shell_sigma(8)
    history = []
    psi, info = PotentialSolver(sigma, H).solve(tuple(np.zeros_like(face) for face in smooth_faces(sigma.shape)),
                                                residuals=history)
    assert np.all(psi == 0)
    assert (info["iterations"], info["residual"], info["true_residual"], info["converged"]) == (0, 0.0, 0.0, True)
    assert history == info["residuals"] == [0.0]


def test_a_solve_gives_the_numba_thread_count_back():
    """The serial levels lower numba's thread count to 1 while they run; after a solve the caller has its own count
    back, so its later kernels (the primary field, the field step, the next solver) run on all threads, and a count
    the caller lowered itself stays lowered."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads")
    sigma = shell_sigma(16)  # every level below serial_below: all of them run on one thread
    solver = PotentialSolver(sigma, H)
    before = numba.get_num_threads()
    try:
        for threads in (2, 1):
            numba.set_num_threads(threads)
            solver.solve(smooth_faces(sigma.shape))
            assert numba.get_num_threads() == threads
    finally:
        numba.set_num_threads(before)
