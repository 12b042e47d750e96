"""SPFD assembly and E-field: slow references, compatibility, and a manufactured solution (2nd order)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import spsolve

from CondNetLogic.solver import (
    assemble_operator,
    assemble_rhs,
    conductor_components,
    electric_field,
    face_conductances,
    solver_dtype,
)

AXES = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]


def random_sigma(shape=(6, 7, 5), seed=0):
    rng = np.random.default_rng(seed)
    sigma = rng.choice([0.01, 0.43, 2.0], size=shape) * rng.uniform(0.8, 1.2, size=shape)
    sigma[rng.random(shape) < 0.2] = 0.0
    return sigma


def random_faces(shape, seed=1):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(tuple(n - (d == axis) for d, n in enumerate(shape))) for axis in range(3))


def neighbours(p, shape):
    """(axis, q, sign) for each in-grid neighbour q = p +- e_axis; sign +1 towards +axis."""
    for axis, step in enumerate(AXES):
        for sign in (1, -1):
            q = tuple(np.add(p, np.multiply(step, sign)))
            if all(0 <= c < n for c, n in zip(q, shape)):
                yield axis, q, sign


def harmonic(s1, s2):
    return 0.0 if s1 == 0 or s2 == 0 else 2 * s1 * s2 / (s1 + s2)


def face_value(faces, axis, p, q, sign):
    return faces[axis][p if sign == 1 else q]


def test_face_conductances_match_loop():
    sigma = random_sigma()
    gx, gy, gz = face_conductances(sigma)
    assert gx.shape == (5, 7, 5)
    assert gy.shape == (6, 6, 5)
    assert gz.shape == (6, 7, 4)
    for axis, g in enumerate((gx, gy, gz)):
        for p in np.ndindex(*g.shape):
            q = tuple(np.add(p, AXES[axis]))
            assert g[p] == pytest.approx(harmonic(sigma[p], sigma[q]), rel=1e-14)


@pytest.mark.parametrize(("dtype", "expected"), [(np.float32, np.float32), (np.float64, np.float64),
                                                  (np.uint8, np.float64)])
def test_dtype_rule(dtype, expected):
    sigma = np.ones((3, 3, 3), dtype=dtype)
    assert face_conductances(sigma)[0].dtype == expected
    assert solver_dtype(dtype) == expected
    faces = tuple(face.astype(dtype) for face in random_faces((3, 3, 3)))
    assert assemble_rhs(sigma, faces, 1e-3).dtype == expected


def test_operator_matches_loop_and_is_a_singular_spd_laplacian():
    sigma = random_sigma()
    h = 2e-3
    matrix, index = assemble_operator(sigma, h)
    assert matrix.dtype == np.float64
    assert np.array_equal(index >= 0, sigma > 0)
    dense = np.zeros(matrix.shape)
    for p in zip(*np.nonzero(sigma > 0)):
        for _, q, _ in neighbours(p, sigma.shape):
            g = harmonic(sigma[p], sigma[q])
            if g > 0:
                dense[index[p], index[q]] -= g / h**2
                dense[index[p], index[p]] += g / h**2
    np.testing.assert_allclose(matrix.toarray(), dense, rtol=1e-13, atol=1e-9)
    np.testing.assert_allclose(dense.sum(axis=1), 0, atol=1e-8)
    eigenvalues = np.linalg.eigvalsh(dense)
    _, components = conductor_components(sigma)
    assert np.sum(np.abs(eigenvalues) < 1e-8 * eigenvalues.max()) == components
    assert eigenvalues.min() > -1e-8 * eigenvalues.max()


def test_rhs_matches_loop_and_is_compatible():
    sigma = random_sigma(seed=2)
    faces = random_faces(sigma.shape)
    h = 1e-3
    b = assemble_rhs(sigma, faces, h)
    expected = np.zeros(sigma.shape)
    for p in zip(*np.nonzero(sigma > 0)):
        for axis, q, sign in neighbours(p, sigma.shape):
            expected[p] += sign * harmonic(sigma[p], sigma[q]) * face_value(faces, axis, p, q, sign) / h
    np.testing.assert_allclose(b, expected, rtol=1e-12, atol=1e-9)
    labels, count = conductor_components(sigma)
    sums = np.bincount(labels.ravel(), b.ravel(), count + 1)[1:]
    np.testing.assert_allclose(sums, 0, atol=1e-9 * np.abs(b).max())


def test_electric_field_matches_loop():
    sigma = random_sigma(seed=3)
    faces = random_faces(sigma.shape, seed=4)
    psi = np.random.default_rng(5).standard_normal(sigma.shape) * 1e-3
    h = 1.5e-3
    field = electric_field(psi, sigma, faces, h)
    assert field.shape == sigma.shape + (3,)
    expected = np.zeros_like(field)
    for p in zip(*np.nonzero(sigma > 0)):
        for axis in range(3):
            values = []
            for ax, q, sign in neighbours(p, sigma.shape):
                if ax == axis and harmonic(sigma[p], sigma[q]) > 0:
                    lo, hi = (p, q) if sign == 1 else (q, p)
                    values.append(-(psi[hi] - psi[lo]) / h - face_value(faces, axis, p, q, sign))
            expected[p + (axis,)] = np.mean(values) if values else 0.0
    np.testing.assert_allclose(field, expected, rtol=1e-12, atol=1e-12)
    assert np.all(field[sigma == 0] == 0)


def test_components_are_face_connected():
    sigma = np.zeros((5, 5, 5))
    sigma[1, 1, 1] = 1.0
    sigma[2, 2, 1] = 1.0  # edge neighbour only: a separate island
    sigma[3:5, 3:5, 3:5] = 0.2
    labels, count = conductor_components(sigma)
    assert count == 3
    assert labels[1, 1, 1] != labels[2, 2, 1]


class TestManufacturedSolution:
    """Homogeneous cube, dA/dt = -grad(phi) + c with div c = 0 and c . n = 0 on the walls.

    Then psi = phi + const and E = -c exactly; the discrete psi must converge at second order.
    """

    side_m = 0.08

    def fields(self, n):
        h = self.side_m / n
        faces = []
        for axis in range(3):
            shape = tuple(n - (d == axis) for d, _ in enumerate(range(3)))
            grid = (np.indices(shape).astype(float) + 0.5)
            grid[axis] += 0.5
            x, y, z = grid / n  # unit-cube coordinates of the face midpoints
            grad_phi = [np.pi * np.cos(np.pi * x) * np.cos(2 * np.pi * y) * z,
                        -2 * np.pi * np.sin(np.pi * x) * np.sin(2 * np.pi * y) * z,
                        np.sin(np.pi * x) * np.cos(2 * np.pi * y)][axis] / self.side_m
            c = [np.sin(np.pi * x) * np.cos(np.pi * y), -np.cos(np.pi * x) * np.sin(np.pi * y), 0 * z][axis]
            faces.append(-grad_phi + c)
        centres = (np.indices((n, n, n)) + 0.5) / n
        x, y, z = centres
        phi = np.sin(np.pi * x) * np.cos(2 * np.pi * y) * z
        field = np.stack([-np.sin(np.pi * x) * np.cos(np.pi * y), np.cos(np.pi * x) * np.sin(np.pi * y), 0 * z], -1)
        return h, tuple(faces), phi - phi.mean(), field

    def solve(self, n):
        sigma = np.full((n, n, n), 0.33)
        h, faces, phi, field = self.fields(n)
        matrix, index = assemble_operator(sigma, h)
        b = assemble_rhs(sigma, faces, h)[index >= 0]
        matrix = matrix.tolil()
        matrix[0, :] = 0
        matrix[0, 0] = 1.0
        b[0] = 0.0
        psi = spsolve(matrix.tocsr(), b)
        psi = (psi - psi.mean()).reshape(sigma.shape)
        e_num = electric_field(psi, sigma, faces, h)
        # The voxel field is one-sided (first order) on the wall layer; compare on the central half.
        inner = (slice(n // 4, n - n // 4),) * 3
        return (np.abs(psi - phi).max() / np.abs(phi).max(),
                np.abs(e_num[inner] - field[inner]).max() / np.abs(field).max())

    def test_second_order(self):
        errors = [self.solve(n) for n in (8, 16, 32)]
        psi_errors, field_errors = np.array(errors).T
        psi_orders = np.log2(psi_errors[:-1] / psi_errors[1:])
        field_orders = np.log2(field_errors[:-1] / field_errors[1:])
        assert psi_errors[-1] < 5e-3
        assert np.all(psi_orders > 1.8), psi_orders
        assert np.all(field_orders > 1.8), field_orders


class TestBadInput:
    def test_nan_sigma(self):
        sigma = np.ones((3, 3, 3))
        sigma[1, 1, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            face_conductances(sigma)

    def test_negative_sigma(self):
        sigma = np.ones((3, 3, 3))
        sigma[1, 1, 1] = -0.1  # one negative voxel among conducting ones
        with pytest.raises(ValueError, match=">= 0"):
            assemble_operator(sigma, 1e-3)

    def test_empty_conductor(self):
        with pytest.raises(ValueError, match="no conductive voxel"):
            assemble_operator(np.zeros((3, 3, 3)), 1e-3)

    def test_not_3d(self):
        with pytest.raises(ValueError, match="3-D"):
            face_conductances(np.ones((3, 3)))

    def test_complex_sigma(self):
        with pytest.raises(TypeError, match="real"):
            face_conductances(np.ones((3, 3, 3), dtype=complex))

    @pytest.mark.parametrize("spacing", [0.0, -1e-3, np.inf, 1.0])
    def test_bad_spacing(self, spacing):
        with pytest.raises(ValueError, match="spacing_m"):
            assemble_operator(np.ones((3, 3, 3)), spacing)

    def test_face_shape_mismatch(self):
        sigma = np.ones((4, 4, 4))
        faces = list(random_faces(sigma.shape))
        faces[1] = faces[1][:, :-1]
        with pytest.raises(ValueError, match=r"dadt_faces\[1\] must have shape \(4, 3, 4\)"):
            assemble_rhs(sigma, tuple(faces), 1e-3)

    def test_faces_not_a_triple(self):
        with pytest.raises(TypeError, match="tuple"):
            assemble_rhs(np.ones((4, 4, 4)), np.zeros((3, 4, 4, 4)), 1e-3)

    def test_nan_faces(self):
        faces = list(random_faces((4, 4, 4)))
        faces[2][0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            assemble_rhs(np.ones((4, 4, 4)), tuple(faces), 1e-3)

    def test_psi_shape(self):
        sigma = np.ones((4, 4, 4))
        with pytest.raises(ValueError, match="psi must have the shape"):
            electric_field(np.zeros((4, 4, 3)), sigma, random_faces(sigma.shape), 1e-3)

    @pytest.mark.parametrize("bad", [np.inf, -np.inf])
    def test_infinite_sigma(self, bad):
        """An infinite conductivity is refused as NaN/inf, whatever its sign (it would give NaN face conductances)."""
        sigma = np.ones((3, 3, 3))
        sigma[1, 1, 1] = bad
        with pytest.raises(ValueError, match="NaN/inf"):
            face_conductances(sigma)


def test_dadt_faces_are_returned_as_float_arrays():
    """float32/float64 faces pass through uncopied; integer ones come back as float64 (the solver's field kernel
    reads float faces only); complex ones are refused."""
    from CondNetLogic.solver.spfd import validate_dadt_faces

    shape = (4, 5, 3)
    faces = random_faces(shape)
    floats = (faces[0].astype(np.float32), faces[1], faces[2])
    assert all(out is face for out, face in zip(validate_dadt_faces(floats, shape), floats))
    integers = tuple(np.round(face * 10).astype(np.int16) for face in faces)
    checked = validate_dadt_faces(integers, shape)
    assert [face.dtype for face in checked] == [np.float64] * 3
    assert all(np.array_equal(out, face) for out, face in zip(checked, integers))
    with pytest.raises(TypeError, match="real"):
        validate_dadt_faces((faces[0] * 1j, faces[1], faces[2]), shape)
