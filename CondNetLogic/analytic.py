"""Analytic reference solutions for validating the primary field and the E-field solver.

All functions take SI units (m, A, A/s) and return SI (T m for A, T for B, V/m for E).

Spherical conductor
-------------------
For a conductor whose conductivity depends only on the distance to a centre (a homogeneous sphere or
concentric shells) and sources outside it, the induced field inside has no radial component, does not
depend on the conductivities, and equals ``E = -dA_P/dt`` with the vector potential in the Poincare
(multipolar) gauge ``A_P(r) = integral_0^1 B(s r) x (s r) ds`` (``r`` from the centre):
``r . A_P = 0``, ``div A_P = 0`` and ``curl A_P = B`` where the region is source-free, so ``E`` satisfies
Faraday's law, carries no charge inside and no current through any sphere — the unique solution.

* :func:`dipole_sphere_efield`: closed form for magnetic dipoles (Heller & van Hulsteyn 1992; the same
  formula as SimNIBS ``analytical_solutions.tms_E_field``).
* :func:`wire_sphere_efield`: any closed thin-wire coil, ``A_P`` integrated by Gauss-Legendre quadrature
  over ``s`` with the exact Biot-Savart field of straight segments; the quadrature converges
  exponentially (the integrand is analytic inside the sphere), checked in ``test_analytic.py``.

Wire potentials
---------------
:func:`segment_vector_potential` (closed form of a straight segment) and :func:`loop_vector_potential`
(circular loop, complete elliptic integrals) test :mod:`CondNetLogic.primary_field`.

References
----------
L. Heller, D. B. van Hulsteyn, "Brain stimulation using electromagnetic sources: theoretical aspects",
Biophys. J. 63(1), 129-138, 1992, doi:10.1016/S0006-3495(92)81587-4.
J. D. Jackson, Classical Electrodynamics, 3rd ed., Sec. 5.5 (circular loop).
"""
from __future__ import annotations

import numpy as np

from .primary_field import MU0_OVER_4PI

__all__ = [
    "dipole_primary_dadt",
    "dipole_sphere_efield",
    "loop_vector_potential",
    "segment_distances",
    "segment_magnetic_field",
    "segment_vector_potential",
    "wire_sphere_efield",
]


def _points(points_m, name="points_m") -> np.ndarray:
    points = np.asarray(points_m, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3); got shape {points.shape}")
    return points


def _dipoles(positions_m, moments_m2):
    positions = np.atleast_2d(np.asarray(positions_m, dtype=np.float64))
    moments = np.atleast_2d(np.asarray(moments_m2, dtype=np.float64))
    if positions.shape != moments.shape or positions.shape[1] != 3:
        raise ValueError(
            f"dipole positions and moments must both be (M, 3); got {positions.shape} and {moments.shape}"
        )
    return positions, moments


def dipole_primary_dadt(points_m, positions_m, moments_m2, didt: float) -> np.ndarray:
    """``dA/dt`` (V/m) of magnetic dipoles in free space: ``mu0/(4 pi) dI/dt m x (r - r0) / |r - r0|^3``.

    Parameters
    ----------
    points_m : float array (N, 3), m
    positions_m : float array (M, 3) or (3,), m
        Dipole positions.
    moments_m2 : float array (M, 3) or (3,), m^2
        Dipole moments per ampere of coil current (area vectors), so the moment is ``I * moments_m2``.
    didt : float
        A/s.

    Returns
    -------
    ndarray (N, 3), V/m
    """
    points = _points(points_m)
    positions, moments = _dipoles(positions_m, moments_m2)
    out = np.zeros_like(points)
    for position, moment in zip(positions, moments):
        rel = points - position
        out += np.cross(moment, rel) / np.linalg.norm(rel, axis=1)[:, None] ** 3
    return MU0_OVER_4PI * didt * out


def dipole_sphere_efield(points_m, positions_m, moments_m2, didt: float, *, center_m=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Total induced E-field (V/m) inside a spherically symmetric conductor from external magnetic dipoles.

    Parameters
    ----------
    points_m : float array (N, 3), m
        Points inside the conductor.
    positions_m : float array (M, 3) or (3,), m
        Dipole positions, outside the conductor.
    moments_m2 : float array (M, 3) or (3,), m^2
        Moments per ampere of coil current.
    didt : float
        A/s.
    center_m : array (3,), m
        Centre of the conductor.

    Returns
    -------
    ndarray (N, 3), V/m
        ``E = -mu0/(4 pi) dI/dt / F^2 [F (r x m) - (m . grad F) (r x r0)]`` summed over the dipoles, with
        ``a = r0 - r``, ``F = |a| (|r0| |a| + r0 . a)`` and ``grad F = (|a|^2/|r0| + 2|a| + 2|r0| +
        r0.a/|a|) r0 - (|a| + 2|r0| + r0.a/|a|) r`` (positions relative to the centre).

    Raises
    ------
    ValueError
        If a point is not closer to the centre than every dipole.

    Notes
    -----
    Heller & van Hulsteyn 1992, Eq. 11 (the field does not depend on conductivity).
    """
    center = np.asarray(center_m, dtype=np.float64).reshape(3)
    r = _points(points_m) - center
    positions, moments = _dipoles(positions_m, moments_m2)
    positions = positions - center
    if r.shape[0] and np.linalg.norm(r, axis=1).max() >= np.linalg.norm(positions, axis=1).min():
        raise ValueError("every dipole must lie farther from the centre than every evaluation point")
    field = np.zeros_like(r)
    for r0, moment in zip(positions, moments):
        a = r0 - r
        norm_a = np.linalg.norm(a, axis=1)[:, None]
        norm_r0 = np.linalg.norm(r0)
        r0_dot_a = (a @ r0)[:, None]
        f = norm_a * (norm_r0 * norm_a + r0_dot_a)
        grad_f = (norm_a**2 / norm_r0 + 2.0 * norm_a + 2.0 * norm_r0 + r0_dot_a / norm_a) * r0 - (
            norm_a + 2.0 * norm_r0 + r0_dot_a / norm_a
        ) * r
        field += (f * np.cross(r, moment) - (grad_f @ moment)[:, None] * np.cross(r, r0)) / f**2
    return -MU0_OVER_4PI * didt * field


def segment_vector_potential(points_m, start_m, end_m, current: float = 1.0) -> np.ndarray:
    """Vector potential (T m) of one straight current segment, closed form.

    ``A = mu0/(4 pi) I u ln((|r-a| + |r-b| + L) / (|r-a| + |r-b| - L))`` for the segment ``a -> b`` with
    unit vector ``u`` and length ``L``.

    >>> a = segment_vector_potential([[0.0, 1.0, 0.0]], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    >>> bool(np.isclose(a[0, 0], 1e-7 * 2 * np.arcsinh(1.0)))
    True
    """
    points = _points(points_m)
    start = np.asarray(start_m, dtype=np.float64).reshape(3)
    end = np.asarray(end_m, dtype=np.float64).reshape(3)
    length = np.linalg.norm(end - start)
    if length == 0:
        raise ValueError("segment has zero length")
    unit = (end - start) / length
    total = np.linalg.norm(points - start, axis=1) + np.linalg.norm(points - end, axis=1)
    return MU0_OVER_4PI * current * np.log((total + length) / (total - length))[:, None] * unit


def loop_vector_potential(points_m, radius_m: float, current: float = 1.0) -> np.ndarray:
    """Vector potential (T m) of a circular loop of radius ``radius_m`` in ``z = 0`` centred at the origin.

    The current circulates counter-clockwise about ``+z``.  ``A = A_phi e_phi`` with
    ``A_phi = mu0 I / (pi k) sqrt(a / rho) [(1 - k^2/2) K(k^2) - E(k^2)]`` and
    ``k^2 = 4 a rho / ((a + rho)^2 + z^2)`` (Jackson Sec. 5.5); ``A = 0`` on the axis.  Near the axis the
    bracket cancels to ``O(k^4)``, so the relative precision there is about ``1e-16 / k^4``.
    """
    from scipy.special import ellipe, ellipk

    points = _points(points_m)
    radius = float(radius_m)
    if radius <= 0:
        raise ValueError(f"radius_m must be > 0; got {radius}")
    rho = np.hypot(points[:, 0], points[:, 1])
    z = points[:, 2]
    out = np.zeros_like(points)
    off_axis = rho > 0
    rho_o, z_o = rho[off_axis], z[off_axis]
    m = 4.0 * radius * rho_o / ((radius + rho_o) ** 2 + z_o**2)
    k = np.sqrt(m)
    a_phi = 4.0 * MU0_OVER_4PI * current / k * np.sqrt(radius / rho_o) * ((1.0 - 0.5 * m) * ellipk(m) - ellipe(m))
    out[off_axis, 0] = -a_phi * points[off_axis, 1] / rho_o
    out[off_axis, 1] = a_phi * points[off_axis, 0] / rho_o
    return out


def segment_magnetic_field(points_m, segments_m, current: float = 1.0) -> np.ndarray:
    """Magnetic flux density (T) of straight current segments, closed-form Biot-Savart.

    Parameters
    ----------
    points_m : float array (N, 3), m
    segments_m : float array (S, 2, 3), m
        Start and end of each segment; the current flows from start to end.
    current : float
        A.

    Returns
    -------
    ndarray (N, 3), T
    """
    from . import _primary_kernels as kernels

    points = np.ascontiguousarray(_points(points_m))
    segments = np.asarray(segments_m, dtype=np.float64)
    if segments.ndim != 3 or segments.shape[1:] != (2, 3):
        raise ValueError(f"segments_m must be (S, 2, 3); got shape {segments.shape}")
    out = np.zeros_like(points)
    kernels.biot_savart_points(
        points, np.ascontiguousarray(segments[:, 0]), np.ascontiguousarray(segments[:, 1]), out
    )
    return MU0_OVER_4PI * current * out


def segment_distances(segments, point) -> np.ndarray:
    """Distance from ``point`` (3,) to each straight segment of ``segments`` (S, 2, 3; start, end), in their unit:
    to the nearest point of the segment, its ends included, not of the line through it."""
    rel = np.asarray(segments, dtype=np.float64) - np.asarray(point, dtype=np.float64).reshape(3)
    delta = rel[:, 1] - rel[:, 0]
    length2 = np.einsum("ij,ij->i", delta, delta)
    along = -np.einsum("ij,ij->i", rel[:, 0], delta)
    t = np.clip(np.divide(along, length2, out=np.zeros_like(along), where=length2 > 0), 0.0, 1.0)
    return np.linalg.norm(rel[:, 0] + t[:, None] * delta, axis=1)


def _check_closed(segments: np.ndarray) -> None:
    """Raise unless every vertex is entered as often as it is left (closed current paths)."""
    def rows(points):
        keys = np.round(points / 1e-9).astype(np.int64)
        return keys[np.lexsort(keys.T[::-1])]

    if not np.array_equal(rows(segments[:, 0]), rows(segments[:, 1])):
        raise ValueError("the wire segments do not form closed loops; the sphere solution needs closed currents")


def wire_sphere_efield(
    points_m, segments_m, didt: float, *, center_m=(0.0, 0.0, 0.0), n_quadrature: int = 32
) -> np.ndarray:
    """Total induced E-field (V/m) inside a spherically symmetric conductor from a closed thin-wire coil.

    Parameters
    ----------
    points_m : float array (N, 3), m
        Points inside the conductor.
    segments_m : float array (S, 2, 3), m
        Closed wire loops as straight segments (current from start to end).
    didt : float
        A/s.
    center_m : array (3,), m
        Centre of the conductor.
    n_quadrature : int
        Gauss-Legendre nodes on ``s in [0, 1]``.

    Returns
    -------
    ndarray (N, 3), V/m
        ``E(r) = -dI/dt sum_q w_q s_q b(c + s_q r) x r`` (``b`` = B per ampere, ``r`` from the centre
        ``c``): the Poincare-gauge potential of the module docstring.

    Raises
    ------
    ValueError
        If the segments are not closed loops or a point is not closer to the centre than every wire.
    """
    center = np.asarray(center_m, dtype=np.float64).reshape(3)
    r = _points(points_m) - center
    segments = np.asarray(segments_m, dtype=np.float64)
    if segments.ndim != 3 or segments.shape[1:] != (2, 3):
        raise ValueError(f"segments_m must be (S, 2, 3); got shape {segments.shape}")
    _check_closed(segments)
    wire_distance = segment_distances(segments, center).min()
    if r.shape[0] and np.linalg.norm(r, axis=1).max() >= wire_distance:
        raise ValueError(
            f"points reach {np.linalg.norm(r, axis=1).max():.4g} m from the centre but a wire passes at "
            f"{wire_distance:.4g} m: the coil must lie outside the sphere containing the points"
        )
    nodes, weights = np.polynomial.legendre.leggauss(int(n_quadrature))
    s = 0.5 * (nodes + 1.0)
    w = 0.5 * weights
    field = np.zeros_like(r)
    for s_q, w_q in zip(s, w):
        b = segment_magnetic_field(center + s_q * r, segments)
        field += (w_q * s_q) * np.cross(b, r)
    return -didt * field
