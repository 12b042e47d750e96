"""Analytic references: sphere E-fields (dipole closed form, wire coil by Poincare-gauge quadrature) and wire fields.

The sphere solutions are checked against the defining properties of the exact solution, not against each
other only: inside a spherically symmetric conductor the induced field has no radial component, is
divergence-free, and differs from the primary field -dA/dt by a gradient (curl-free difference).
"""
from __future__ import annotations

import numpy as np
import pytest

from CondNetLogic.analytic import (
    dipole_primary_dadt,
    dipole_sphere_efield,
    loop_vector_potential,
    segment_distances,
    segment_magnetic_field,
    segment_vector_potential,
    wire_sphere_efield,
)
from CondNetLogic.coil import coil_pose, load_coil
from CondNetLogic.primary_field import MU0_OVER_4PI, dadt_at_points

RADIUS_M = 0.095


def _interior_points(n, radius, seed):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    return direction * radius * rng.uniform(0.05, 1.0, size=(n, 1)) ** (1 / 3)


def _jacobian(function, points, step=1e-5):
    """d f_i / d x_j by central differences, shape (N, 3, 3)."""
    columns = []
    for axis in range(3):
        offset = np.zeros(3)
        offset[axis] = step
        columns.append((function(points + offset) - function(points - offset)) / (2 * step))
    return np.stack(columns, axis=2)


def _curl(jacobian):
    return np.stack([jacobian[:, 2, 1] - jacobian[:, 1, 2], jacobian[:, 0, 2] - jacobian[:, 2, 0],
                     jacobian[:, 1, 0] - jacobian[:, 0, 1]], axis=1)


DIPOLE_POS = np.array([0.02, -0.01, 0.3])
DIPOLE_MOMENT = np.array([0.3, -0.5, 1.0]) * 1e-3


def test_dipole_field_is_tangential_divergence_free_and_faraday():
    points = _interior_points(40, 0.9 * RADIUS_M, seed=1)

    def total(p):
        return dipole_sphere_efield(p, DIPOLE_POS, DIPOLE_MOMENT, 1e8)

    def secondary(p):
        return total(p) + dipole_primary_dadt(p, DIPOLE_POS, DIPOLE_MOMENT, 1e8)

    field = total(points)
    scale = np.abs(field).max()
    radial = np.einsum("ij,ij->i", field, points) / np.linalg.norm(points, axis=1)
    assert np.abs(radial).max() < 1e-12 * scale
    jac = _jacobian(total, points)
    assert np.abs(np.trace(jac, axis1=1, axis2=2)).max() * RADIUS_M < 1e-6 * scale
    assert np.abs(_curl(_jacobian(secondary, points))).max() * RADIUS_M < 1e-6 * scale


def test_radial_dipole_induces_only_the_primary_field():
    # a dipole pointing at the centre drives azimuthal currents that never reach the surface: no charges,
    # so the total field equals the free-space primary field -dA/dt
    points = _interior_points(20, 0.9 * RADIUS_M, seed=2)
    field = dipole_sphere_efield(points, [0, 0, 0.3], [0, 0, 1e-3], 1e8)
    primary = -dipole_primary_dadt(points, [0, 0, 0.3], [0, 0, 1e-3], 1e8)
    np.testing.assert_allclose(field, primary, rtol=1e-10, atol=1e-12 * np.abs(primary).max())


def test_tiny_loop_matches_dipole_closed_form():
    radius = 1e-3
    angles = np.linspace(0.0, 2 * np.pi, 65)
    loop = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.zeros(65)], axis=1)
    area = 0.5 * np.sum(loop[:-1, 0] * loop[1:, 1] - loop[1:, 0] * loop[:-1, 1])
    tilt = np.deg2rad(30.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    loop = loop @ rotation.T + DIPOLE_POS
    segments = np.stack([loop[:-1], loop[1:]], axis=1)
    points = _interior_points(30, 0.9 * RADIUS_M, seed=3)
    wire = wire_sphere_efield(points, segments, 1e8, n_quadrature=16)
    dipole = dipole_sphere_efield(points, DIPOLE_POS, area * rotation[:, 2], 1e8)
    # the loop is a dipole up to (a / d)^2 ~ 1e-5
    assert np.abs(wire - dipole).max() < 1e-4 * np.abs(dipole).max()


@pytest.fixture(scope="module")
def figure8_segments():
    coil = load_coil("figure8_70mm")
    pose = coil_pose([0.0, 0.0, 95.0], [0.0, 0.2, -1.0], [0.0, 1.0, 0.0])
    return coil.segments_ras_mm(pose) * 1e-3


def test_figure8_sphere_field_properties(figure8_segments):
    points = _interior_points(30, 0.85 * RADIUS_M, seed=4)

    def total(p):
        return wire_sphere_efield(p, figure8_segments, 1e8, n_quadrature=24)

    field = total(points)
    scale = np.abs(field).max()
    radial = np.einsum("ij,ij->i", field, points) / np.linalg.norm(points, axis=1)
    assert np.abs(radial).max() < 1e-12 * scale
    jac = _jacobian(total, points)
    assert np.abs(np.trace(jac, axis1=1, axis2=2)).max() * RADIUS_M < 1e-5 * scale
    # curl E = -dB/dt
    curl = _curl(jac)
    expected = -1e8 * segment_magnetic_field(points, figure8_segments)
    assert np.abs(curl - expected).max() < 1e-5 * np.abs(expected).max()


def test_figure8_quadrature_converges(figure8_segments):
    points = _interior_points(30, 0.95 * RADIUS_M, seed=5)
    reference = wire_sphere_efield(points, figure8_segments, 1e8, n_quadrature=48)
    errors = [np.abs(wire_sphere_efield(points, figure8_segments, 1e8, n_quadrature=n) - reference).max()
              for n in (4, 8, 16)]
    scale = np.abs(reference).max()
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6 * scale


def test_biot_savart_is_curl_of_vector_potential():
    rng = np.random.default_rng(6)
    segments = rng.normal(scale=0.03, size=(5, 2, 3))
    points = rng.normal(scale=0.03, size=(10, 3)) + [0.0, 0.0, 0.1]

    def potential(p):
        return sum(segment_vector_potential(p, a, b, current=2.0) for a, b in segments)

    curl = _curl(_jacobian(potential, points, step=1e-6))
    field = segment_magnetic_field(points, segments, current=2.0)
    np.testing.assert_allclose(curl, field, rtol=1e-5, atol=1e-6 * np.abs(field).max())


def test_loop_potential_curl_on_axis():
    radius = 0.05
    points = np.array([[0.0, 0.0, z] for z in (0.01, 0.03, 0.08)])
    curl = _curl(_jacobian(lambda p: loop_vector_potential(p, radius, current=3.0), points, step=1e-5))
    expected = 4 * np.pi * MU0_OVER_4PI * 3.0 * radius**2 / (2 * (radius**2 + points[:, 2] ** 2) ** 1.5)
    np.testing.assert_allclose(curl[:, 2], expected, rtol=1e-6)
    np.testing.assert_allclose(curl[:, :2], 0.0, atol=1e-9 * expected.max())


def test_loop_potential_matches_fine_polygon():
    points = np.array([[0.02, 0.01, 0.03], [0.06, -0.02, 0.01], [0.0, 0.0, 0.05]])
    angles = np.linspace(0.0, 2 * np.pi, 2049)
    vertices = np.stack([0.05 * np.cos(angles), 0.05 * np.sin(angles), np.zeros_like(angles)], axis=1)
    polygon = dadt_at_points(points, np.stack([vertices[:-1], vertices[1:]], axis=1), 1.0)
    np.testing.assert_allclose(loop_vector_potential(points, 0.05), polygon, rtol=1e-5, atol=1e-14)


def test_sphere_solutions_reject_sources_inside():
    points = np.array([[0.0, 0.0, 0.05]])
    with pytest.raises(ValueError, match="farther from the centre"):
        dipole_sphere_efield(points, [0, 0, 0.04], [0, 1e-3, 0], 1.0)
    square = np.array([[0, 0, 0.02], [0.01, 0, 0.02], [0.01, 0.01, 0.02], [0, 0.01, 0.02], [0, 0, 0.02]])
    segments = np.stack([square[:-1], square[1:]], axis=1)
    with pytest.raises(ValueError, match="outside the sphere"):
        wire_sphere_efield(points, segments, 1.0)
    with pytest.raises(ValueError, match="closed loops"):
        wire_sphere_efield(points, segments[:-1] + [0, 0, 0.2], 1.0)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        dipole_sphere_efield(points, [[0, 0, 0.3]], [[0, 1, 0], [1, 0, 0]], 1.0)


def test_wire_distance_is_to_the_segments_not_their_lines():
    """A closed coil above the sphere whose vertical legs lie on lines through the centre is accepted: the
    "coil outside the points" check measures the distance to each segment, not to its infinite line."""
    loop = np.array([[0.0, 0.0, 0.1], [0.02, 0.0, 0.1], [0.02, 0.0, 0.15], [0.0, 0.0, 0.15], [0.0, 0.0, 0.1]])
    segments = np.stack([loop[:-1], loop[1:]], axis=1)
    points = _interior_points(10, 0.05, seed=7)
    field = wire_sphere_efield(points, segments, 1e8)
    assert np.all(np.isfinite(field))
    assert np.abs(field).max() > 0
    np.testing.assert_allclose(np.einsum("ij,ij->i", field, points), 0.0, atol=1e-12 * 0.05 * np.abs(field).max())


def test_segment_distances_reach_the_segment_not_its_line():
    """Distance to a segment is to its nearest point, an end when the foot of the perpendicular lies beyond it; a
    zero-length segment is a point."""
    segments = np.array([[[-1.0, 0.0, 2.0], [1.0, 0.0, 2.0]],  # foot of the perpendicular inside: 2
                         [[3.0, 0.0, 0.0], [5.0, 0.0, 0.0]],  # beyond its start: 3
                         [[0.0, 4.0, 0.0], [0.0, 4.0, 0.0]]])  # a point: 4
    np.testing.assert_allclose(segment_distances(segments, [0.0, 0.0, 0.0]), [2.0, 3.0, 4.0])
