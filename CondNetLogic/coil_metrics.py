"""Strength, depth and spread of a coil's E-field in a spherical head: numbers to compare coils and check imports.

The head is a sphere of radius 85 mm and the cortex the sphere 15 mm below its surface (the head model of
Deng, Lisanby & Peterchev 2013, who compared 50 coils this way). The coil sits above the top of the head, its
origin ``offset_mm`` outside the surface (SimNIBS's ``distance``, default 4 mm) and its ``+z`` axis pointing at
the centre, so the result does not depend on a scan. The field is the analytic one
(:func:`~CondNetLogic.analytic.wire_sphere_efield`, :func:`~CondNetLogic.analytic.dipole_sphere_efield`), which
inside a spherically symmetric conductor does not depend on the conductivities.

Reported (definitions written out, since they differ between papers):

* ``e_axis_per_a_per_us``: ``|E|`` (V/m per A/us of dI/dt) on the cortex, straight below the coil origin;
* ``e_max_per_a_per_us``: the largest ``|E|`` on the cortex, and ``peak_offset_mm`` its distance from the axis
  (0 for a figure-8 coil, a wing's radius for a single round coil);
* ``depth_half_mm``: depth below the cortex, along the line from the cortical maximum to the centre, where
  ``|E|`` has fallen to half of ``e_max`` (Deng et al.'s d1/2 takes the deepest half-value point anywhere; for a
  coil whose field peaks on one radius the two agree);
* ``area_half_cm2``: the area of cortex where ``|E| >= e_max / 2`` (Deng et al.'s S1/2 is the half-value
  *volume* divided by the depth; this is the surface form of the same spread).

Reference: Z.-D. Deng, S. H. Lisanby, A. V. Peterchev, "Electric field depth-focality tradeoff in transcranial
magnetic stimulation: simulation comparison of 50 coil designs", Brain Stimulation 6(1), 1-13, 2013,
doi:10.1016/j.brs.2012.02.005.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .analytic import dipole_sphere_efield, segment_distances, wire_sphere_efield
from .coil import Coil

__all__ = ["HEAD_RADIUS_MM", "CORTEX_DEPTH_MM", "SphereMetrics", "sphere_efield", "sphere_metrics"]

#: Radius of the spherical head (mm).
HEAD_RADIUS_MM = 85.0
#: Depth of the cortex below the head's surface (mm).
CORTEX_DEPTH_MM = 15.0
#: 1 A/us of dI/dt in A/s: the fields below are per A/us.
_PER_A_PER_US = 1e6
#: The cortex is sampled up to this polar angle from the coil axis (degrees), about 1 mm apart.
_MAX_POLAR_DEG = 55.0
_SPACING_MM = 1.0
_CHUNK = 2048


@dataclass(frozen=True)
class SphereMetrics:
    """Field of one coil in the spherical head (see the module docstring); fields in V/m per A/us of dI/dt."""

    e_axis_per_a_per_us: float
    e_max_per_a_per_us: float
    peak_offset_mm: float
    depth_half_mm: float
    area_half_cm2: float
    offset_mm: float
    head_radius_mm: float = HEAD_RADIUS_MM
    cortex_depth_mm: float = CORTEX_DEPTH_MM

    def to_dict(self) -> dict:
        return asdict(self)


def sphere_efield(coil: Coil, points_mm: np.ndarray, *, offset_mm: float = 4.0,
                  head_radius_mm: float = HEAD_RADIUS_MM) -> np.ndarray:
    """E-field (V/m per A/us, coil-frame components) at ``points_mm`` (N, 3; coil frame, mm) inside the head.

    The head's centre is at ``z = offset_mm + head_radius_mm`` on the coil axis.

    Raises
    ------
    ValueError
        If a coil source lies in the head (``offset_mm`` too small for the coil), the wires are not closed loops,
        a point is outside the head, or the coil is a sampled A-field (no sources).
    """
    if coil.sampled is not None:
        raise ValueError(f"coil {coil.name!r} is a sampled A-field (NIfTI coil file): the field in a sphere is "
                         "computed from wires or dipoles; use the coil's SimNIBS .ccd or .tcd file")
    center_mm = np.array([0.0, 0.0, float(offset_mm) + float(head_radius_mm)])
    points_mm = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    if np.any(np.linalg.norm(points_mm - center_mm, axis=1) > head_radius_mm):
        raise ValueError("every point must lie in the head")
    # Distance to the segments, not only to their ends: a straight wire between two points outside the head may
    # cut through it.
    distances = [segment_distances(coil.segments_mm(), center_mm),
                 np.linalg.norm(coil.dipole_positions_mm - center_mm, axis=1)]
    nearest = min(float(d.min()) for d in distances if d.size)
    if nearest <= head_radius_mm:
        raise ValueError(f"coil {coil.name!r} reaches {head_radius_mm - nearest:.1f} mm into the head at an offset of "
                         f"{offset_mm:g} mm: its sources extend to z = {coil.source_points_mm()[:, 2].max():.1f} mm; "
                         "give a larger offset (condnet info --scalp-offset MM)")
    center_m, field = center_mm * 1e-3, np.zeros_like(points_mm)
    segments_m = coil.segments_mm() * 1e-3
    for start in range(0, len(points_mm), _CHUNK):
        part = points_mm[start:start + _CHUNK] * 1e-3
        if len(segments_m):
            field[start:start + _CHUNK] += wire_sphere_efield(part, segments_m, _PER_A_PER_US, center_m=center_m)
        if len(coil.dipole_positions_mm):
            field[start:start + _CHUNK] += dipole_sphere_efield(
                part, coil.dipole_positions_mm * 1e-3, coil.dipole_moments_m2, _PER_A_PER_US, center_m=center_m)
    return field


def _cortex_points(radius_mm: float) -> tuple:
    """Points on the cortex sphere (centred at the origin, the coil axis along -z) about ``_SPACING_MM`` apart,
    up to ``_MAX_POLAR_DEG`` from the axis: ``(points (N, 3) mm, area of each (N,) mm^2, polar angle (N,) rad)``.

    A cap around the axis and rings of equal polar width, each ring's area split evenly among its points.
    """
    step = _SPACING_MM / radius_mm
    points = [np.array([[0.0, 0.0, -radius_mm]])]
    areas = [np.array([2 * np.pi * radius_mm**2 * (1 - np.cos(step / 2))])]
    angles = [np.zeros(1)]
    for theta in np.arange(1, int(np.deg2rad(_MAX_POLAR_DEG) / step) + 1) * step:
        count = max(6, int(round(2 * np.pi * radius_mm * np.sin(theta) / _SPACING_MM)))
        phi = (np.arange(count) + 0.5) * 2 * np.pi / count
        points.append(np.stack([radius_mm * np.sin(theta) * np.cos(phi), radius_mm * np.sin(theta) * np.sin(phi),
                                np.full(count, -radius_mm * np.cos(theta))], axis=1))
        band = 2 * np.pi * radius_mm**2 * (np.cos(theta - step / 2) - np.cos(theta + step / 2))
        areas.append(np.full(count, band / count))
        angles.append(np.full(count, theta))
    return np.concatenate(points), np.concatenate(areas), np.concatenate(angles)


def sphere_metrics(coil: Coil, *, offset_mm: float = 4.0) -> SphereMetrics:
    """Strength, depth and spread of ``coil``'s field in the spherical head (see the module docstring).

    Raises
    ------
    ValueError
        As :func:`sphere_efield`, or if the half-value area reaches the edge of the sampled cortex
        (``_MAX_POLAR_DEG`` from the axis: a coil too broad for these numbers).
    """
    if not (np.isfinite(offset_mm) and offset_mm >= 0.0):
        raise ValueError(f"offset_mm must be a finite number >= 0; got {offset_mm}")
    cortex_radius = HEAD_RADIUS_MM - CORTEX_DEPTH_MM
    center = np.array([0.0, 0.0, offset_mm + HEAD_RADIUS_MM])
    shell, areas, polar = _cortex_points(cortex_radius)
    magnitude = np.linalg.norm(sphere_efield(coil, shell + center, offset_mm=offset_mm), axis=1)
    peak = int(np.argmax(magnitude))
    e_max = float(magnitude[peak])
    if not e_max > 0.0:
        raise ValueError(f"coil {coil.name!r} induces no field in the head (zero currents or moments?)")
    half = magnitude >= 0.5 * e_max
    if np.any(half & (polar > polar.max() - 2 * _SPACING_MM / cortex_radius)):  # the outer two rings
        raise ValueError(f"the field of coil {coil.name!r} stays above half its maximum {_MAX_POLAR_DEG:g} degrees "
                         "from the axis: too broad for these numbers")
    direction = shell[peak] / cortex_radius  # from the centre to the cortical maximum
    depths = np.arange(0.0, cortex_radius, 0.1)
    along = np.linalg.norm(sphere_efield(coil, center + (cortex_radius - depths)[:, None] * direction,
                                         offset_mm=offset_mm), axis=1)
    below = np.flatnonzero(along < 0.5 * e_max)
    if not len(below):
        raise ValueError(f"the field of coil {coil.name!r} does not fall to half its maximum inside the head")
    i = int(below[0])  # linear interpolation between the last depth above half and the first below
    depth_half = depths[i] if i == 0 else depths[i - 1] + 0.1 * (along[i - 1] - 0.5 * e_max) / (along[i - 1] - along[i])
    return SphereMetrics(
        e_axis_per_a_per_us=float(magnitude[0]),
        e_max_per_a_per_us=e_max,
        peak_offset_mm=float(np.linalg.norm(shell[peak, :2])),
        depth_half_mm=float(depth_half),
        area_half_cm2=float(areas[half].sum() / 100.0),
        offset_mm=float(offset_mm),
    )
