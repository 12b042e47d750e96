"""Strength, depth and spread of a coil's field in the spherical head (``CondNetLogic.coil_metrics``)."""
from __future__ import annotations

import numpy as np
import pytest

from CondNetLogic.analytic import dipole_sphere_efield
from CondNetLogic.coil import Coil, load_coil
from CondNetLogic.coil_metrics import CORTEX_DEPTH_MM, HEAD_RADIUS_MM, sphere_efield, sphere_metrics

CORTEX_MM = HEAD_RADIUS_MM - CORTEX_DEPTH_MM


def _wires(*polylines) -> Coil:
    return Coil.from_dict({"format_version": 1, "name": "wires", "winding": {
        "type": "polylines", "polylines_mm": [np.asarray(line, dtype=float).tolist() for line in polylines]}})


def _dipoles(positions_mm, moments_m2, name="dipoles") -> Coil:
    return Coil.from_dict({"format_version": 1, "name": name, "winding": {
        "type": "dipoles", "positions_mm": np.atleast_2d(positions_mm).tolist(),
        "moments_m2": np.atleast_2d(moments_m2).tolist()}})


def _square(side_mm: float, centre_x_mm: float = 0.0, sense: float = 1.0) -> np.ndarray:
    h = side_mm / 2
    corners = np.array([[-h, -h], [h, -h], [h, h], [-h, h], [-h, -h]])[:: int(sense)]
    return np.column_stack([corners[:, 0] + centre_x_mm, corners[:, 1], np.zeros(5)])


def test_a_wire_loop_and_its_dipole_sheet_give_the_same_numbers():
    """A closed planar current I equals a sheet of dipoles of moment I dA over the area it encloses."""
    wire = _wires(_square(30.0, -16.0), _square(30.0, 16.0, sense=-1.0))  # a small square figure-8
    cell = 1.0
    axis = (np.arange(30) + 0.5) * cell - 15.0
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    positions = np.concatenate([np.column_stack([grid[:, 0] + x, grid[:, 1], np.zeros(len(grid))]) for x in (-16, 16)])
    moments = np.zeros_like(positions)
    moments[:, 2] = np.repeat([1.0, -1.0], len(grid)) * (cell * 1e-3) ** 2
    ours, sheet = sphere_metrics(wire), sphere_metrics(_dipoles(positions, moments))
    assert sheet.e_max_per_a_per_us == pytest.approx(ours.e_max_per_a_per_us, rel=2e-3)
    assert sheet.depth_half_mm == pytest.approx(ours.depth_half_mm, abs=0.1)
    assert sheet.area_half_cm2 == pytest.approx(ours.area_half_cm2, rel=1e-2)
    assert ours.peak_offset_mm == 0.0  # a figure-8 peaks under its centre
    assert ours.e_axis_per_a_per_us == ours.e_max_per_a_per_us


def test_a_round_coil_has_no_field_on_its_axis():
    phi = np.linspace(0.0, 2 * np.pi, 129)
    loop = _wires(np.column_stack([30 * np.cos(phi), 30 * np.sin(phi), np.zeros_like(phi)]))
    metrics = sphere_metrics(loop)
    assert metrics.e_axis_per_a_per_us < 1e-6 * metrics.e_max_per_a_per_us
    assert 10.0 < metrics.peak_offset_mm < 40.0  # a ring of maxima under the winding


def test_depth_and_area_against_direct_sampling():
    """A tangential dipole: the half-value depth and area sampled independently (fine ray, random cap points)."""
    position, moment = np.array([0.0, 0.0, -5.0]), np.array([1e-3, 0.0, 0.0])
    metrics = sphere_metrics(_dipoles(position, moment), offset_mm=4.0)
    centre = np.array([0.0, 0.0, 4.0 + HEAD_RADIUS_MM])

    def magnitude(points_mm):
        return np.linalg.norm(dipole_sphere_efield(points_mm * 1e-3, position * 1e-3, moment, 1e6,
                                                   center_m=centre * 1e-3), axis=1)

    depths = np.linspace(0.0, 40.0, 40001)
    along = magnitude(centre + (CORTEX_MM - depths)[:, None] * np.array([0.0, 0.0, -1.0]))
    assert metrics.e_max_per_a_per_us == pytest.approx(along[0], rel=1e-12)  # the maximum is below the dipole
    assert metrics.depth_half_mm == pytest.approx(depths[np.argmax(along < 0.5 * along[0])], abs=2e-3)
    rng = np.random.default_rng(0)
    cos_theta = rng.uniform(np.cos(np.deg2rad(40.0)), 1.0, 200_000)  # uniform in area on a 40 degree cap
    phi = rng.uniform(0.0, 2 * np.pi, cos_theta.size)
    sin_theta = np.sqrt(1 - cos_theta**2)
    cap = CORTEX_MM * np.column_stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), -cos_theta]) + centre
    cap_area_cm2 = 2 * np.pi * CORTEX_MM**2 * (1 - np.cos(np.deg2rad(40.0))) / 100.0
    sampled = cap_area_cm2 * np.mean(magnitude(cap) >= 0.5 * along[0])
    # Monte Carlo: 0.6 % standard error; the 1 mm sampling of the cortex counts 1.1 % more than a fine (0.02 degree)
    # integration, 9.52 against 9.42 cm^2
    assert metrics.area_half_cm2 == pytest.approx(sampled, rel=0.03)


def test_the_shipped_figure8_and_a_larger_offset():
    coil = load_coil("figure8_70mm")
    near, far = sphere_metrics(coil), sphere_metrics(coil, offset_mm=10.0)
    assert near.e_axis_per_a_per_us == near.e_max_per_a_per_us
    assert far.e_max_per_a_per_us < near.e_max_per_a_per_us  # farther from the head: weaker, and broader
    assert far.area_half_cm2 > near.area_half_cm2
    assert near.to_dict()["offset_mm"] == 4.0


def test_bad_coils_and_offsets_raise():
    with pytest.raises(ValueError, match=r"reaches 1.0 mm into the head .* extend to z = 5.0 mm; give a larger"):
        sphere_metrics(_dipoles([0.0, 0.0, 5.0], [1e-3, 0.0, 0.0], name="deep"))
    with pytest.raises(ValueError, match="induces no field in the head"):
        sphere_metrics(_dipoles([0.0, 0.0, -5.0], [0.0, 0.0, 0.0]))
    phi = np.linspace(0.0, 2 * np.pi, 257)
    with pytest.raises(ValueError, match="too broad for these numbers"):
        sphere_metrics(_wires(np.column_stack([90 * np.cos(phi), 90 * np.sin(phi), np.zeros_like(phi)])))
    with pytest.raises(ValueError, match="offset_mm must be a finite number >= 0"):
        sphere_metrics(load_coil("figure8_70mm"), offset_mm=-1.0)
    with pytest.raises(ValueError, match="closed loops"):
        sphere_metrics(_wires([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))


def test_cortex_samples_tile_the_cap_they_cover():
    """The area weights of the cortex samples add up to the spherical cap they cover, the cap around the axis
    included, and the samples lie on the cortex."""
    from CondNetLogic.coil_metrics import _SPACING_MM, _cortex_points

    points, areas, polar = _cortex_points(CORTEX_MM)
    step = _SPACING_MM / CORTEX_MM
    assert areas[0] == pytest.approx(2 * np.pi * CORTEX_MM**2 * (1 - np.cos(step / 2)), rel=1e-12)
    assert areas.sum() == pytest.approx(2 * np.pi * CORTEX_MM**2 * (1 - np.cos(polar.max() + step / 2)), rel=1e-12)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), CORTEX_MM, rtol=1e-12)


def test_a_straight_wire_through_the_scalp_is_refused():
    """A wire whose straight segment runs through the head is refused even when both its end vertices lie outside:
    here the bottom edge runs 79 mm from the centre of the 85 mm head, its corners 99 mm away."""
    loop = _wires([[-60.0, 0.0, 10.0], [60.0, 0.0, 10.0], [60.0, 0.0, -50.0], [-60.0, 0.0, -50.0], [-60.0, 0.0, 10.0]])
    with pytest.raises(ValueError, match="into the head"):
        sphere_metrics(loop)


def test_a_coil_on_the_scalp_offset_zero_is_allowed():
    """offset_mm = 0 (the coil origin on the scalp) is a valid offset, and the field there is stronger than at 4 mm."""
    coil = _dipoles([0.0, 0.0, -5.0], [1e-3, 0.0, 0.0])
    touching, near = sphere_metrics(coil, offset_mm=0.0), sphere_metrics(coil, offset_mm=4.0)
    assert touching.offset_mm == 0.0
    assert touching.e_max_per_a_per_us > near.e_max_per_a_per_us


def test_sphere_efield_refuses_points_outside_the_head():
    """sphere_efield evaluates the field inside the head only: a point 1 mm outside the scalp (between the head and
    the coil) is refused, one on the cortex is not."""
    coil = _dipoles([0.0, 0.0, -5.0], [1e-3, 0.0, 0.0])
    centre = np.array([0.0, 0.0, 4.0 + HEAD_RADIUS_MM])
    assert np.linalg.norm(sphere_efield(coil, centre - [0.0, 0.0, CORTEX_MM])) > 0
    with pytest.raises(ValueError, match="every point must lie in the head"):
        sphere_efield(coil, centre - [0.0, 0.0, HEAD_RADIUS_MM + 1.0])
