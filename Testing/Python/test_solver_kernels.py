"""Every numba kernel of the SPFD multigrid against a slow, obviously correct numpy reference.

Plus one contract class over all kernel wrappers: float32 and float64 run and keep their dtype,
non-contiguous input raises ValueError, mixed precision raises TypeError, a size mismatch raises ValueError.
"""
from __future__ import annotations

import numpy as np
import pytest

from CondNetLogic.solver import multigrid as mg
from CondNetLogic.solver.spfd import assemble_rhs, face_conductances

SHAPES = [(5, 6, 7), (8, 8, 8), (6, 9, 4)]
NEIGHBOURS = [((-1, 0, 0), 0, -1), ((1, 0, 0), 0, 0), ((0, -1, 0), 1, -1), ((0, 1, 0), 1, 0),
              ((0, 0, -1), 2, -1), ((0, 0, 1), 2, 0)]


def random_level(shape, dtype=np.float64, seed=0):
    """Random conductances with 200x jumps and air (including the boundary layer), plus x and b."""
    rng = np.random.default_rng(seed)
    sigma = rng.choice([0.01, 0.3, 2.0], size=shape) * rng.uniform(0.8, 1.2, size=shape)
    sigma[rng.random(shape) < 0.15] = 0.0
    sigma[[0, -1], :, :] = 0
    sigma[:, [0, -1], :] = 0
    sigma[:, :, [0, -1]] = 0
    w = np.zeros((3,) + shape)
    for axis, g in enumerate(face_conductances(sigma) if sigma.any() else ()):
        w[axis][tuple(slice(None, -1) if d == axis else slice(None) for d in range(3))] = g
    x = rng.standard_normal(shape)
    b = rng.standard_normal(shape)
    return w.astype(dtype), x.astype(dtype), b.astype(dtype)


def face(w, p, offset, axis, shift):
    """Conductance of the face between cell p and p + offset (reference indexing, no layout tricks)."""
    q = tuple(np.add(p, offset))
    return w[(axis,) + (q if shift == -1 else p)]


def reference_operator(x, w):
    y = np.zeros_like(x, dtype=np.float64)
    n = x.shape
    for p in np.ndindex(*n):
        if any(c == 0 or c == m - 1 for c, m in zip(p, n)):
            continue
        for offset, axis, shift in NEIGHBOURS:
            q = tuple(np.add(p, offset))
            y[p] += face(w, p, offset, axis, shift) * (float(x[p]) - float(x[q]))
    return y


def reference_sweep(x, b, w, omega, color):
    x = x.astype(np.float64)
    n = x.shape
    for p in np.ndindex(*n):
        if any(c == 0 or c == m - 1 for c, m in zip(p, n)) or sum(p) % 2 != color:
            continue
        d = sum(face(w, p, off, axis, shift) for off, axis, shift in NEIGHBOURS)
        if d > 0:
            s = sum(face(w, p, off, axis, shift) * x[tuple(np.add(p, off))] for off, axis, shift in NEIGHBOURS)
            x[p] = (1 - omega) * x[p] + omega * (b[p] + s) / d
    return x


def reference_restrict(rf):
    rc = np.zeros(mg.coarse_shape(rf.shape))
    for p in np.ndindex(*rf.shape):
        if all(0 < c < m - 1 for c, m in zip(p, rf.shape)):
            rc[tuple((c + 1) // 2 for c in p)] += rf[p]
    return rc


def reference_coarsen(wf, scale):
    """Sum the fine faces between two different coarse cells into the face between those cells."""
    wc = np.zeros((3,) + mg.coarse_shape(wf.shape[1:]))
    shape = wf.shape[1:]
    for axis in range(3):
        for p in np.ndindex(*shape):
            q = list(p)
            q[axis] += 1
            if q[axis] >= shape[axis] or wf[(axis,) + p] == 0:
                continue
            cp = tuple((c + 1) // 2 for c in p)
            cq = tuple((c + 1) // 2 for c in q)
            if cp != cq:
                wc[(axis,) + cp] += scale * wf[(axis,) + p]
    return wc


def has_face(w):
    """Cells with at least one conductive face (reference loop)."""
    shape = w.shape[1:]
    out = np.zeros(shape, dtype=bool)
    for p in np.ndindex(*shape):
        if all(0 < c < m - 1 for c, m in zip(p, shape)):
            out[p] = any(face(w, p, off, axis, shift) > 0 for off, axis, shift in NEIGHBOURS)
    return out


def tolerance(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
class TestAgainstReference:
    def test_apply_operator(self, shape, dtype):
        w, x, _ = random_level(shape, dtype)
        y = np.zeros_like(x)
        xy = mg.apply_operator(x, w, y)
        expected = reference_operator(x, w)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(y, expected, atol=tolerance(dtype) * scale)
        assert xy == pytest.approx(float(np.sum(x.astype(np.float64) * expected)), rel=1e-4, abs=1e-4 * scale)

    def test_residual(self, shape, dtype):
        w, x, b = random_level(shape, dtype, seed=1)
        b[~has_face(w)] = 0  # the solver's invariant: b vanishes on cells without a conductive face
        r = np.zeros_like(x)
        rr = mg.residual(x, b, w, r)
        expected = np.zeros(shape)
        expected[1:-1, 1:-1, 1:-1] = (b - reference_operator(x, w))[1:-1, 1:-1, 1:-1]
        np.testing.assert_allclose(r, expected, atol=tolerance(dtype) * np.abs(expected).max())
        assert rr == pytest.approx(float(np.sum(expected**2)), rel=1e-5)

    @pytest.mark.parametrize("color", [0, 1])
    def test_rb_sor_sweep(self, shape, dtype, color):
        w, x, b = random_level(shape, dtype, seed=2)
        expected = reference_sweep(x, b, w, 1.3, color)
        mg.rb_sor_sweep(x, b, w, 1.3, color)
        np.testing.assert_allclose(x, expected, atol=tolerance(dtype) * np.abs(expected).max())

    def test_restrict_sum(self, shape, dtype):
        _, rf, _ = random_level(shape, dtype, seed=3)
        rc = np.full(mg.coarse_shape(shape), np.nan, dtype=dtype)
        mg.restrict_sum(rf, rc)
        np.testing.assert_allclose(rc, reference_restrict(rf.astype(np.float64)), atol=tolerance(dtype) * 8)

    def test_prolong_add_is_restrict_transpose(self, shape, dtype):
        _, xf, _ = random_level(shape, dtype, seed=4)
        ec = np.random.default_rng(5).standard_normal(mg.coarse_shape(shape)).astype(dtype)
        expected = xf.astype(np.float64)
        for p in np.ndindex(*shape):
            if all(0 < c < m - 1 for c, m in zip(p, shape)):
                expected[p] += ec[tuple((c + 1) // 2 for c in p)]
        mg.prolong_add(ec, xf)
        np.testing.assert_allclose(xf, expected, atol=tolerance(dtype) * 8)

    def test_coarsen_faces(self, shape, dtype):
        w, _, _ = random_level(shape, dtype, seed=6)
        wc = mg.coarsen_faces(w, 0.5)
        assert wc.dtype == dtype
        np.testing.assert_allclose(wc, reference_coarsen(w.astype(np.float64), 0.5), rtol=tolerance(dtype),
                                   atol=tolerance(dtype))

    def test_row_bounds(self, shape, dtype):
        w, _, _ = random_level(shape, dtype, seed=8)
        rows = mg.row_bounds(w)
        conductive = has_face(w)
        for i, j in np.ndindex(*shape[:2]):
            ks = np.flatnonzero(conductive[i, j])
            expected = (ks[0], ks[-1] + 1) if ks.size else (1, 1)
            assert tuple(rows[:, i, j]) == expected

    def test_divergence_equals_assemble_rhs(self, shape, dtype):
        rng = np.random.default_rng(9)
        sigma = rng.choice([0.0, 0.01, 0.43, 2.0], size=shape)
        faces = tuple(rng.standard_normal(tuple(n - (d == a) for d, n in enumerate(shape))) for a in range(3))
        w = np.zeros((3,) + tuple(n + 2 for n in shape), dtype=dtype)
        for axis, g in enumerate(face_conductances(sigma)):
            w[(axis,) + tuple(slice(1, n - (d == axis) + 1) for d, n in enumerate(shape))] = g
        out = mg.divergence(w, faces, (-1, -1, -1), 1e-3)
        assert out.dtype == dtype
        expected = assemble_rhs(sigma, faces, 1e-3) * 1e-3**2
        np.testing.assert_allclose(out[1:-1, 1:-1, 1:-1], expected, atol=tolerance(dtype) * np.abs(expected).max())
        assert np.all(out[[0, -1]] == 0)

    def test_project_components(self, shape, dtype):
        rng = np.random.default_rng(10)
        labels = rng.integers(0, 4, size=shape).astype(np.int32)
        values = rng.standard_normal(shape).astype(dtype)
        expected = values.astype(np.float64)
        for label in range(1, 4):
            expected[labels == label] -= expected[labels == label].mean()
        expected[labels == 0] = 0
        sums = mg.project_components(values, labels, 3)
        assert sums.shape == (4,)
        np.testing.assert_allclose(values, expected, atol=tolerance(dtype) * 10)

    def test_vector_kernels(self, shape, dtype):
        rng = np.random.default_rng(7)
        x, r, p, q, z = (rng.standard_normal(shape).astype(dtype) for _ in range(5))
        x64, r64, p64, q64, z64 = (a.astype(np.float64) for a in (x, r, p, q, z))
        assert mg.dot(x, r) == pytest.approx(float(np.sum(x64 * r64)), rel=1e-5)
        rr = mg.cg_update(x, r, p, q, 0.7)
        np.testing.assert_allclose(x, x64 + 0.7 * p64, rtol=1e-5)
        np.testing.assert_allclose(r, r64 - 0.7 * q64, rtol=1e-5, atol=1e-6)
        assert rr == pytest.approx(float(np.sum((r64 - 0.7 * q64) ** 2)), rel=1e-5)
        mg.cg_direction(p, z, 0.3)
        np.testing.assert_allclose(p, z64 + 0.3 * p64, rtol=1e-5, atol=1e-6)


def test_galerkin_scale_is_exact_triple_product():
    """coarse_scale = 1 gives P^T L P for piecewise-constant P (the Galerkin operator)."""
    shape = (8, 7, 6)
    w, _, _ = random_level(shape)
    wc = mg.coarsen_faces(w, 1.0)
    coarse = mg.coarse_shape(shape)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ec = rng.standard_normal(coarse)
        ec[[0, -1]] = 0
        ec[:, [0, -1]] = 0
        ec[:, :, [0, -1]] = 0
        xf = np.zeros(shape)
        mg.prolong_add(ec, xf)
        lhs = np.sum(ec * reference_operator(ec, wc))
        rhs = np.sum(xf * reference_operator(xf, w))
        assert lhs == pytest.approx(rhs, rel=1e-12)


def kernel_calls(dtype, shape=(6, 6, 6)):
    """Every wrapper with valid arguments of ``dtype``: name -> (callable, dict of array arguments)."""
    w, x, b = random_level(shape, dtype)
    coarse = np.zeros(mg.coarse_shape(shape), dtype=dtype)
    other = np.ones(shape, dtype=dtype)
    return {
        "rb_sor_sweep": (lambda x, b, w: mg.rb_sor_sweep(x, b, w, 1.1, 0), {"x": x, "b": b, "w": w}),
        "residual": (lambda x, b, w, r: mg.residual(x, b, w, r), {"x": x, "b": b, "w": w, "r": other}),
        "apply_operator": (lambda x, w, y: mg.apply_operator(x, w, y), {"x": x, "w": w, "y": other}),
        "restrict_sum": (lambda rf, rc: mg.restrict_sum(rf, rc), {"rf": x, "rc": coarse}),
        "prolong_add": (lambda ec, xf: mg.prolong_add(ec, xf), {"ec": coarse, "xf": x}),
        "coarsen_faces": (lambda wf: mg.coarsen_faces(wf, 0.5), {"wf": w}),
        "dot": (lambda a, b: mg.dot(a, b), {"a": x, "b": b}),
        "row_bounds": (lambda w: mg.row_bounds(w), {"w": w}),
        "divergence": (lambda w: mg.divergence(w, tuple(np.ones(tuple(n - 2 - (d == a) for d, n in enumerate(shape)))
                                                        for a in range(3)), (-1, -1, -1), 1.0), {"w": w}),
        "project_components": (lambda values: mg.project_components(values, (x > 0).astype(np.int32), 1),
                               {"values": b}),
        "cg_update": (lambda x, r, p, q: mg.cg_update(x, r, p, q, 0.5),
                      {"x": x, "r": b, "p": other, "q": other.copy()}),
        "cg_direction": (lambda p, z: mg.cg_direction(p, z, 0.5), {"p": x, "z": b}),
    }


KERNELS = sorted(kernel_calls(np.float64))


@pytest.mark.parametrize("name", KERNELS)
class TestKernelContract:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_runs_and_keeps_dtype(self, name, dtype):
        func, arrays = kernel_calls(dtype)[name]
        result = func(**arrays)
        if isinstance(result, np.ndarray) and name in ("coarsen_faces", "divergence"):
            assert result.dtype == dtype
        elif result is not None:
            assert np.all(np.isfinite(result))

    def test_float32_gives_the_float64_result(self, name):
        """Same inputs in both precisions: every output (returned, or written into an argument) agrees to float32
        rounding, so the float32 cycles solve the problem the float64 reference does."""
        outputs = []
        for dtype in (np.float32, np.float64):
            func, arrays = kernel_calls(dtype)[name]
            result = func(**arrays)
            flat = [np.asarray(part, dtype=np.float64) for part in (result if isinstance(result, tuple) else
                                                                    (result,)) if part is not None]
            outputs.append(flat + [array.astype(np.float64) for array in arrays.values()])
        for single, double in zip(*outputs):
            np.testing.assert_allclose(single, double, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(double).max()))

    @pytest.mark.parametrize("argument", range(4))
    def test_non_contiguous_raises(self, name, argument):
        func, arrays = kernel_calls(np.float64)[name]
        if argument >= len(arrays):
            pytest.skip(f"{name} takes {len(arrays)} arrays")
        key = list(arrays)[argument]
        arrays[key] = np.asfortranarray(arrays[key])
        with pytest.raises(ValueError, match="C-contiguous"):
            func(**arrays)

    @pytest.mark.parametrize("argument", range(4))
    def test_mixed_precision_raises(self, name, argument):
        func, arrays = kernel_calls(np.float64)[name]
        if argument >= len(arrays) or len(arrays) == 1:
            pytest.skip(f"{name} takes {len(arrays)} arrays")
        key = list(arrays)[argument]
        arrays[key] = arrays[key].astype(np.float32)
        with pytest.raises(TypeError, match="mixed precision"):
            func(**arrays)

    def test_integer_dtype_raises(self, name):
        func, arrays = kernel_calls(np.float64)[name]
        key = next(iter(arrays))
        arrays[key] = arrays[key].astype(np.int64)
        with pytest.raises(TypeError, match="float32 or float64"):
            func(**arrays)

    def test_size_mismatch_raises(self, name):
        func, arrays = kernel_calls(np.float64)[name]
        key = list(arrays)[-1]
        # Drop two layers of the last array (one may map to the same coarse shape); a lone face array
        # loses a component instead.
        arrays[key] = np.ascontiguousarray(arrays[key][:2] if len(arrays) == 1 else arrays[key][..., :-2])
        with pytest.raises(ValueError, match="shape|3-D"):
            func(**arrays)


def test_sweep_rejects_bad_colour_and_omega():
    w, x, b = random_level((5, 5, 5))
    with pytest.raises(ValueError, match="color"):
        mg.rb_sor_sweep(x, b, w, 1.0, 2)
    with pytest.raises(ValueError, match="omega"):
        mg.rb_sor_sweep(x, b, w, 2.0, 0)


def test_grid_without_air_layer_room_raises():
    x = np.zeros((2, 5, 5))
    with pytest.raises(ValueError, match=">= 3 cells"):
        mg.residual(x, x.copy(), np.zeros((3, 2, 5, 5)), x.copy())
