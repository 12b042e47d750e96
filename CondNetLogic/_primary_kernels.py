"""Numba kernels of the primary field (``@njit`` only; checked wrappers live in :mod:`.primary_field`).

All lengths in metres.  The "source sum" at a point ``r`` adds two kinds of sources of a coil:

* straight wire segments ``a_s -> b_s`` (unit vector ``u_s``, length ``L_s``):
  ``u_s ln((|r-a_s| + |r-b_s| + L_s) / (|r-a_s| + |r-b_s| - L_s))``, the exact line integral of
  ``dl' / |r - r'|`` along the segment (dimensionless);
* magnetic dipoles at ``p_d`` with moment ``m_d`` per unit coil current (m^2):
  ``m_d x (r - p_d) / |r - p_d|^3`` (1/m).

Multiplied by ``mu0 / (4 pi) * dI/dt`` either gives ``dA/dt`` in V/m.  A coil without dipoles passes
empty ``(0, 3)`` dipole arrays (and one without wires empty segment arrays): the same compiled kernel serves both.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _line_sum(px, py, pz, starts, units, lengths):
    """Line sum at one point and the distance (m) from the point to the nearest segment."""
    sx = 0.0
    sy = 0.0
    sz = 0.0
    min_d2 = np.inf
    for s in range(starts.shape[0]):
        dax = px - starts[s, 0]
        day = py - starts[s, 1]
        daz = pz - starts[s, 2]
        ux = units[s, 0]
        uy = units[s, 1]
        uz = units[s, 2]
        length = lengths[s]
        ra2 = dax * dax + day * day + daz * daz
        along = dax * ux + day * uy + daz * uz
        # |r - b|^2 with b = a + L u
        rb2 = ra2 - 2.0 * length * along + length * length
        ra = math.sqrt(ra2)
        rb = math.sqrt(max(rb2, 0.0))
        total = ra + rb
        factor = math.log((total + length) / (total - length))
        sx += factor * ux
        sy += factor * uy
        sz += factor * uz
        if along <= 0.0:
            d2 = ra2
        elif along >= length:
            d2 = rb2
        else:
            d2 = ra2 - along * along
        if d2 < min_d2:
            min_d2 = d2
    return sx, sy, sz, math.sqrt(max(min_d2, 0.0))


@njit(cache=True, inline="always")
def _dipole_sum(px, py, pz, positions, moments):
    """Dipole sum at one point and the distance (m) from the point to the nearest dipole."""
    sx = 0.0
    sy = 0.0
    sz = 0.0
    min_d2 = np.inf
    for d in range(positions.shape[0]):
        rx = px - positions[d, 0]
        ry = py - positions[d, 1]
        rz = pz - positions[d, 2]
        r2 = rx * rx + ry * ry + rz * rz
        inv3 = 1.0 / (r2 * math.sqrt(r2))
        sx += (moments[d, 1] * rz - moments[d, 2] * ry) * inv3
        sy += (moments[d, 2] * rx - moments[d, 0] * rz) * inv3
        sz += (moments[d, 0] * ry - moments[d, 1] * rx) * inv3
        if r2 < min_d2:
            min_d2 = r2
    return sx, sy, sz, math.sqrt(min_d2)


@njit(cache=True, inline="always")
def _source_sum(px, py, pz, starts, units, lengths, positions, moments):
    """Line sum plus dipole sum at one point, and the distance (m) to the nearest wire or dipole."""
    lx, ly, lz, line_distance = _line_sum(px, py, pz, starts, units, lengths)
    dx, dy, dz, dipole_distance = _dipole_sum(px, py, pz, positions, moments)
    return lx + dx, ly + dy, lz + dz, min(line_distance, dipole_distance)


@njit(cache=True, parallel=True)
def source_sum_points(points, starts, units, lengths, positions, moments, scale, out, min_distance):
    """``out[n] = scale * source_sum(points[n])``; ``min_distance[n]`` = distance to the nearest source (m)."""
    for n in prange(points.shape[0]):
        sx, sy, sz, dist = _source_sum(points[n, 0], points[n, 1], points[n, 2], starts, units, lengths, positions,
                                       moments)
        out[n, 0] = scale * sx
        out[n, 1] = scale * sy
        out[n, 2] = scale * sz
        min_distance[n] = dist


@njit(cache=True, parallel=True)
def source_sum_lattice(origin, steps, mask, projection, starts, units, lengths, positions, moments, scale, out,
                       row_min_distance, first_row):
    """Source sum on the lattice ``origin + (first_row + i)*steps[0] + j*steps[1] + k*steps[2]`` where ``mask``
    is true.

    ``out[i, j, k, :] = scale * projection @ source_sum`` (``projection`` (P, 3)); unmasked entries are left
    as they are.  ``row_min_distance[i]`` = smallest source distance (m) over the masked points of row ``i``.
    ``first_row`` places a slab of a larger lattice: each point is computed from the lattice's own origin, so a
    lattice evaluated in slabs of any size gives the same bits.
    """
    n_i, n_j, n_k = mask.shape
    n_p = projection.shape[0]
    for i in prange(n_i):
        row_min = np.inf
        row = first_row + i
        for j in range(n_j):
            for k in range(n_k):
                if not mask[i, j, k]:
                    continue
                px = origin[0] + row * steps[0, 0] + j * steps[1, 0] + k * steps[2, 0]
                py = origin[1] + row * steps[0, 1] + j * steps[1, 1] + k * steps[2, 1]
                pz = origin[2] + row * steps[0, 2] + j * steps[1, 2] + k * steps[2, 2]
                sx, sy, sz, dist = _source_sum(px, py, pz, starts, units, lengths, positions, moments)
                for c in range(n_p):
                    out[i, j, k, c] = scale * (projection[c, 0] * sx + projection[c, 1] * sy + projection[c, 2] * sz)
                if dist < row_min:
                    row_min = dist
        row_min_distance[i] = row_min


@njit(cache=True, parallel=True)
def resample_lattice(origin, steps, mask, grid, matrix, out, outside):
    """Trilinear resampling of a vector grid on a lattice given in the grid's index coordinates.

    Lattice point ``(i, j, k)`` sits at grid index ``origin + i*steps[0] + j*steps[1] + k*steps[2]``.
    Where ``mask`` is true and the point lies inside the grid, ``out[i, j, k, :] = matrix @ value``
    (``matrix`` (P, 3)); points outside get ``outside[i, j, k] = True`` and ``out`` untouched.
    """
    n_i, n_j, n_k = mask.shape
    g_i, g_j, g_k = grid.shape[0], grid.shape[1], grid.shape[2]
    n_p = matrix.shape[0]
    for i in prange(n_i):
        for j in range(n_j):
            for k in range(n_k):
                if not mask[i, j, k]:
                    continue
                gx = origin[0] + i * steps[0, 0] + j * steps[1, 0] + k * steps[2, 0]
                gy = origin[1] + i * steps[0, 1] + j * steps[1, 1] + k * steps[2, 1]
                gz = origin[2] + i * steps[0, 2] + j * steps[1, 2] + k * steps[2, 2]
                if not (0.0 <= gx <= g_i - 1 and 0.0 <= gy <= g_j - 1 and 0.0 <= gz <= g_k - 1):
                    outside[i, j, k] = True
                    continue
                x0 = min(int(gx), g_i - 2)
                y0 = min(int(gy), g_j - 2)
                z0 = min(int(gz), g_k - 2)
                fx = gx - x0
                fy = gy - y0
                fz = gz - z0
                vx = 0.0
                vy = 0.0
                vz = 0.0
                for dx in range(2):
                    wx = fx if dx == 1 else 1.0 - fx
                    for dy in range(2):
                        wy = fy if dy == 1 else 1.0 - fy
                        for dz in range(2):
                            w = wx * wy * (fz if dz == 1 else 1.0 - fz)
                            vx += w * grid[x0 + dx, y0 + dy, z0 + dz, 0]
                            vy += w * grid[x0 + dx, y0 + dy, z0 + dz, 1]
                            vz += w * grid[x0 + dx, y0 + dy, z0 + dz, 2]
                for c in range(n_p):
                    out[i, j, k, c] = matrix[c, 0] * vx + matrix[c, 1] * vy + matrix[c, 2] * vz


@njit(cache=True, parallel=True)
def biot_savart_points(points, starts, ends, out):
    """``out[n]`` = sum over segments of the closed-form Biot-Savart field per unit current / (mu0 / 4 pi).

    For a segment ``a -> b`` and ``ra = a - r``, ``rb = b - r``:
    ``(|ra| + |rb|) (ra x rb) / (|ra| |rb| (|ra| |rb| + ra . rb))`` (1/m).
    """
    for n in prange(points.shape[0]):
        bx = 0.0
        by = 0.0
        bz = 0.0
        for s in range(starts.shape[0]):
            ax = starts[s, 0] - points[n, 0]
            ay = starts[s, 1] - points[n, 1]
            az = starts[s, 2] - points[n, 2]
            cx = ends[s, 0] - points[n, 0]
            cy = ends[s, 1] - points[n, 1]
            cz = ends[s, 2] - points[n, 2]
            na = math.sqrt(ax * ax + ay * ay + az * az)
            nc = math.sqrt(cx * cx + cy * cy + cz * cz)
            factor = (na + nc) / (na * nc * (na * nc + ax * cx + ay * cy + az * cz))
            bx += factor * (ay * cz - az * cy)
            by += factor * (az * cx - ax * cz)
            bz += factor * (ax * cy - ay * cx)
        out[n, 0] = bx
        out[n, 1] = by
        out[n, 2] = bz
