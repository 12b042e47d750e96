"""Numba kernels of the cell-centred SPFD multigrid solver.

Only ``@njit`` functions live here; the checked Python wrappers are in :mod:`CondNetLogic.solver.multigrid`
(``check_*`` helpers) and call these after validating shape, dtype and contiguity.

Layout shared by every kernel
-----------------------------
* A level is a grid of ``(n0, n1, n2)`` cells whose outermost layer is air: kernels update the interior
  ``1 .. n - 2`` only, so every neighbour index exists and needs no bounds test.
* ``w`` is ``(3, n0, n1, n2)``: ``w[d, i, j, k]`` is the conductance of the face between cell ``(i, j, k)``
  and its neighbour along ``+d``; it is zero where either cell is air and on the last layer of axis ``d``.
* The operator is ``(L x)_p = sum_f w_f (x_p - x_q)`` over the six faces ``f = (p, q)`` of cell ``p``.
* Coarse cell ``I`` (interior ``1 .. m``, ``m = ceil((n - 2) / 2)``) owns the interior fine cells ``2 I - 1``
  and ``2 I`` along each axis (only ``2 I - 1`` when ``2 I = n - 1`` is the fine boundary layer).

Loops run over the outer axis with ``prange`` only where the iterations are independent (a red-black
half-sweep reads only the other colour); indices are int64; no ``fastmath`` (it would change reductions).
Reductions accumulate in float64 whatever the array dtype.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "apply_operator",
    "component_sums",
    "divergence",
    "cg_direction",
    "cg_update",
    "coarsen_faces",
    "copy_spans",
    "dense_matvec",
    "dot",
    "dot_pair",
    "prolong_add",
    "rb_sor_sweep",
    "residual",
    "restrict_sum",
    "row_bounds",
    "shifted_copy",
    "subtract_means",
    "voxel_field",
]


@njit(cache=True, parallel=True)
def rb_sor_sweep(x, b, w, rows, omega, color):  # pragma: no cover - compiled
    """One SOR half-sweep over interior cells with ``(i + j + k) % 2 == color``; ``x`` modified in place.

    ``x_p <- (1 - omega) x_p + omega (b_p + sum_f w_f x_q) / d_p`` with ``d_p = sum_f w_f``; cells with
    ``d_p == 0`` (air, isolated voxels) are left unchanged.  Only ``rows[0, i, j] <= k < rows[1, i, j]``
    is visited (the conductive span of each row, see ``row_bounds``).
    """
    n0, n1, n2 = x.shape
    one = x.dtype.type(1.0)
    for i in prange(1, n0 - 1):
        for j in range(1, n1 - 1):
            lo = rows[0, i, j]
            for k in range(lo + (i + j + lo + color) % 2, rows[1, i, j], 2):
                wxm = w[0, i - 1, j, k]
                wxp = w[0, i, j, k]
                wym = w[1, i, j - 1, k]
                wyp = w[1, i, j, k]
                wzm = w[2, i, j, k - 1]
                wzp = w[2, i, j, k]
                d = wxm + wxp + wym + wyp + wzm + wzp
                if d > 0:
                    s = (wxm * x[i - 1, j, k] + wxp * x[i + 1, j, k] + wym * x[i, j - 1, k]
                         + wyp * x[i, j + 1, k] + wzm * x[i, j, k - 1] + wzp * x[i, j, k + 1])
                    x[i, j, k] = (one - omega) * x[i, j, k] + omega * (b[i, j, k] + s) / d


@njit(cache=True, parallel=True)
def row_bounds(w, rows):  # pragma: no cover - compiled
    """``rows[0, i, j]``, ``rows[1, i, j]``: first and one-past-last interior ``k`` with a conductive face.

    Rows without one, and the boundary rows, get ``(1, 1)``.  ``rows`` (2, n0, n1) int64 written in place.
    """
    _, n0, n1, n2 = w.shape
    for i in prange(n0):
        for j in range(n1):
            first = n2
            last = 0
            if 0 < i < n0 - 1 and 0 < j < n1 - 1:
                for k in range(1, n2 - 1):
                    if (w[0, i - 1, j, k] + w[0, i, j, k] + w[1, i, j - 1, k] + w[1, i, j, k]
                            + w[2, i, j, k - 1] + w[2, i, j, k]) > 0:
                        if k < first:
                            first = k
                        last = k + 1
            if last == 0:
                first = 1
                last = 1
            rows[0, i, j] = first
            rows[1, i, j] = last


@njit(cache=True, parallel=True)
def residual(x, b, w, rows, r):  # pragma: no cover - compiled
    """``r = b - L x`` on each row's conductive span (``r`` modified in place).

    Outside the spans ``r`` is not written: the solver allocates it zeroed and ``b`` and ``L x`` vanish
    there.  Returns the squared Euclidean norm of ``r`` over the spans (float64).
    """
    n0, n1, n2 = x.shape
    total = 0.0
    for i in prange(1, n0 - 1):
        part = 0.0
        for j in range(1, n1 - 1):
            for k in range(rows[0, i, j], rows[1, i, j]):
                xp = x[i, j, k]
                v = (b[i, j, k]
                     - w[0, i - 1, j, k] * (xp - x[i - 1, j, k]) - w[0, i, j, k] * (xp - x[i + 1, j, k])
                     - w[1, i, j - 1, k] * (xp - x[i, j - 1, k]) - w[1, i, j, k] * (xp - x[i, j + 1, k])
                     - w[2, i, j, k - 1] * (xp - x[i, j, k - 1]) - w[2, i, j, k] * (xp - x[i, j, k + 1]))
                r[i, j, k] = v
                part += np.float64(v) * np.float64(v)
        total += part
    return total


@njit(cache=True, parallel=True)
def apply_operator(x, w, rows, y):  # pragma: no cover - compiled
    """``y = L x`` on each row's conductive span (``y`` modified in place); returns ``x . y`` (float64)."""
    n0, n1, n2 = x.shape
    total = 0.0
    for i in prange(1, n0 - 1):
        part = 0.0
        for j in range(1, n1 - 1):
            for k in range(rows[0, i, j], rows[1, i, j]):
                xp = x[i, j, k]
                v = (w[0, i - 1, j, k] * (xp - x[i - 1, j, k]) + w[0, i, j, k] * (xp - x[i + 1, j, k])
                     + w[1, i, j - 1, k] * (xp - x[i, j - 1, k]) + w[1, i, j, k] * (xp - x[i, j + 1, k])
                     + w[2, i, j, k - 1] * (xp - x[i, j, k - 1]) + w[2, i, j, k] * (xp - x[i, j, k + 1]))
                y[i, j, k] = v
                part += np.float64(xp) * np.float64(v)
        total += part
    return total


@njit(cache=True, parallel=True)
def restrict_sum(rf, rc):  # pragma: no cover - compiled
    """``rc[I] = sum of rf over the interior children of coarse cell I`` (interior ``I``); in place.

    The coarse boundary layer is set to zero; the fine boundary layer is never read.
    """
    n0, n1, n2 = rf.shape
    m0, m1, m2 = rc.shape
    for ic in prange(m0):
        for jc in range(m1):
            for kc in range(m2):
                total = rc.dtype.type(0)
                if 0 < ic < m0 - 1 and 0 < jc < m1 - 1 and 0 < kc < m2 - 1:
                    for i in range(2 * ic - 1, min(2 * ic + 1, n0 - 1)):
                        for j in range(2 * jc - 1, min(2 * jc + 1, n1 - 1)):
                            for k in range(2 * kc - 1, min(2 * kc + 1, n2 - 1)):
                                total += rf[i, j, k]
                rc[ic, jc, kc] = total


@njit(cache=True, parallel=True)
def prolong_add(ec, xf):  # pragma: no cover - compiled
    """``xf[i] += ec[1 + (i - 1) // 2]`` on the interior fine cells (piecewise-constant prolongation)."""
    n0, n1, n2 = xf.shape
    for i in prange(1, n0 - 1):
        ic = (i + 1) // 2
        for j in range(1, n1 - 1):
            jc = (j + 1) // 2
            for k in range(1, n2 - 1):
                xf[i, j, k] += ec[ic, jc, (k + 1) // 2]


@njit(cache=True, parallel=True)
def coarsen_faces(wf, wc, alpha):  # pragma: no cover - compiled
    """Coarse face conductances: ``alpha`` times the sum of the 2 x 2 fine faces that cross each coarse face.

    ``wc`` (3, m0, m1, m2) is written in place; its faces touching the coarse boundary layer are zero.
    """
    _, m0, m1, m2 = wc.shape
    for ic in prange(m0):
        for jc in range(m1):
            for kc in range(m2):
                if ic == 0 or jc == 0 or kc == 0 or ic >= m0 - 1 or jc >= m1 - 1 or kc >= m2 - 1:
                    wc[0, ic, jc, kc] = 0
                    wc[1, ic, jc, kc] = 0
                    wc[2, ic, jc, kc] = 0
                    continue
                i = 2 * ic - 1
                j = 2 * jc - 1
                k = 2 * kc - 1
                # The face between coarse I and I + 1 along x is crossed by fine faces at fine index 2 I.
                if ic < m0 - 2:
                    wc[0, ic, jc, kc] = alpha * (wf[0, i + 1, j, k] + wf[0, i + 1, j, k + 1]
                                                 + wf[0, i + 1, j + 1, k] + wf[0, i + 1, j + 1, k + 1])
                else:
                    wc[0, ic, jc, kc] = 0
                if jc < m1 - 2:
                    wc[1, ic, jc, kc] = alpha * (wf[1, i, j + 1, k] + wf[1, i, j + 1, k + 1]
                                                 + wf[1, i + 1, j + 1, k] + wf[1, i + 1, j + 1, k + 1])
                else:
                    wc[1, ic, jc, kc] = 0
                if kc < m2 - 2:
                    wc[2, ic, jc, kc] = alpha * (wf[2, i, j, k + 1] + wf[2, i, j + 1, k + 1]
                                                 + wf[2, i + 1, j, k + 1] + wf[2, i + 1, j + 1, k + 1])
                else:
                    wc[2, ic, jc, kc] = 0


@njit(cache=True, parallel=True)
def dot(a, b):  # pragma: no cover - compiled
    """Euclidean inner product of two equally shaped 3-D arrays, accumulated in float64."""
    n0, n1, n2 = a.shape
    total = 0.0
    for i in prange(n0):
        part = 0.0
        for j in range(n1):
            for k in range(n2):
                part += np.float64(a[i, j, k]) * np.float64(b[i, j, k])
        total += part
    return total


@njit(cache=True, parallel=True)
def dot_pair(a, b, c):  # pragma: no cover - compiled
    """``(a . b, c . b)`` in one pass, accumulated in float64 (the two products of flexible CG)."""
    n0, n1, n2 = a.shape
    first = 0.0
    second = 0.0
    for i in prange(n0):
        part_first = 0.0
        part_second = 0.0
        for j in range(n1):
            for k in range(n2):
                value = np.float64(b[i, j, k])
                part_first += np.float64(a[i, j, k]) * value
                part_second += np.float64(c[i, j, k]) * value
        first += part_first
        second += part_second
    return first, second


@njit(cache=True, parallel=True)
def copy_spans(source, target, rows):  # pragma: no cover - compiled
    """``target = source`` on each row's conductive span, converting to the dtype of ``target`` (in place)."""
    n0, n1, n2 = source.shape
    for i in prange(1, n0 - 1):
        for j in range(1, n1 - 1):
            for k in range(rows[0, i, j], rows[1, i, j]):
                target[i, j, k] = source[i, j, k]


@njit(cache=True, parallel=True)
def cg_update(x, r, p, q, alpha):  # pragma: no cover - compiled
    """``x += alpha p`` and ``r -= alpha q`` (in place); returns ``r . r`` (float64)."""
    n0, n1, n2 = x.shape
    total = 0.0
    for i in prange(n0):
        part = 0.0
        for j in range(n1):
            for k in range(n2):
                x[i, j, k] += alpha * p[i, j, k]
                v = r[i, j, k] - alpha * q[i, j, k]
                r[i, j, k] = v
                part += np.float64(v) * np.float64(v)
        total += part
    return total


@njit(cache=True, parallel=True)
def cg_direction(p, z, beta):  # pragma: no cover - compiled
    """``p = z + beta p`` (in place)."""
    n0, n1, n2 = p.shape
    for i in prange(n0):
        for j in range(n1):
            for k in range(n2):
                p[i, j, k] = z[i, j, k] + beta * p[i, j, k]



@njit(cache=True, parallel=True)
def divergence(w, ax, ay, az, lo0, lo1, lo2, scale, out):  # pragma: no cover - compiled
    """Right-hand side ``out_p = scale * sum_f s_f w_f a_f`` on the interior cells (``out`` in place).

    ``ax``, ``ay``, ``az`` are the input's face arrays; working cell ``p`` is input voxel ``p + lo``.  A face
    value is read only where ``w_f > 0``, i.e. between two conductive voxels, which lie inside the input.
    Accumulates in float64 and stores in the dtype of ``out``.
    """
    n0, n1, n2 = out.shape
    for i in prange(1, n0 - 1):
        for j in range(1, n1 - 1):
            for k in range(1, n2 - 1):
                total = 0.0
                fi = i + lo0
                fj = j + lo1
                fk = k + lo2
                if w[0, i, j, k] > 0:
                    total += np.float64(w[0, i, j, k]) * np.float64(ax[fi, fj, fk])
                if w[0, i - 1, j, k] > 0:
                    total -= np.float64(w[0, i - 1, j, k]) * np.float64(ax[fi - 1, fj, fk])
                if w[1, i, j, k] > 0:
                    total += np.float64(w[1, i, j, k]) * np.float64(ay[fi, fj, fk])
                if w[1, i, j - 1, k] > 0:
                    total -= np.float64(w[1, i, j - 1, k]) * np.float64(ay[fi, fj - 1, fk])
                if w[2, i, j, k] > 0:
                    total += np.float64(w[2, i, j, k]) * np.float64(az[fi, fj, fk])
                if w[2, i, j, k - 1] > 0:
                    total -= np.float64(w[2, i, j, k - 1]) * np.float64(az[fi, fj, fk - 1])
                out[i, j, k] = scale * total


@njit(cache=True, inline="always")
def _axis_field(psi, w, a, d, i, j, k, ci, cj, ck, spacing):  # pragma: no cover - compiled
    """Component ``d`` of E at input voxel ``(i, j, k)`` (working cell ``(ci, cj, ck)``), see ``voxel_field``.

    A face's neighbour is read only where the face conducts, so a voxel on the input's border never reads
    outside it."""
    oi = 1 if d == 0 else 0
    oj = 1 if d == 1 else 0
    ok = 1 if d == 2 else 0
    p = np.float64(psi[i, j, k])
    total = 0.0
    count = 0
    if w[d, ci, cj, ck] > 0:
        total += -(np.float64(psi[i + oi, j + oj, k + ok]) - p) / spacing - np.float64(a[i, j, k])
        count += 1
    if w[d, ci - oi, cj - oj, ck - ok] > 0:
        total += -(p - np.float64(psi[i - oi, j - oj, k - ok])) / spacing - np.float64(a[i - oi, j - oj, k - ok])
        count += 1
    return total / count if count > 0 else 0.0


@njit(cache=True, parallel=True)
def voxel_field(psi, w, ax, ay, az, lo0, lo1, lo2, spacing, rotation, out, magnitude):  # pragma: no cover
    """``E = -grad psi - dA/dt`` per voxel, rotated, and ``|E|`` (every cell of ``out`` and ``magnitude`` written).

    ``psi``, the face arrays and the outputs are on the input grid; input voxel ``v`` is working cell
    ``v - lo``, whose faces ``w`` mark which faces conduct.  Along each axis the component is the mean of
    ``-(psi_q - psi_p) / spacing - a_f`` over the conductive faces of the voxel (the ``+d`` face added first,
    as in :func:`CondNetLogic.solver.spfd.electric_field`), 0 with none; ``out[v] = rotation @ e``.
    Computes in float64, stores in the dtypes of ``out`` and ``magnitude``.  Returns the number of voxels whose
    field is not finite (a NaN or infinite face value or potential read).
    """
    n0, n1, n2 = magnitude.shape
    m0, m1, m2 = w.shape[1], w.shape[2], w.shape[3]
    bad = 0
    for i in prange(n0):
        ci = i - lo0
        for j in range(n1):
            cj = j - lo1
            for k in range(n2):
                ck = k - lo2
                e0 = 0.0
                e1 = 0.0
                e2 = 0.0
                if 1 <= ci < m0 - 1 and 1 <= cj < m1 - 1 and 1 <= ck < m2 - 1:
                    e0 = _axis_field(psi, w, ax, 0, i, j, k, ci, cj, ck, spacing)
                    e1 = _axis_field(psi, w, ay, 1, i, j, k, ci, cj, ck, spacing)
                    e2 = _axis_field(psi, w, az, 2, i, j, k, ci, cj, ck, spacing)
                for row in range(3):
                    out[i, j, k, row] = rotation[row, 0] * e0 + rotation[row, 1] * e1 + rotation[row, 2] * e2
                size = np.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
                if not np.isfinite(size):
                    bad += 1
                magnitude[i, j, k] = size
    return bad


@njit(cache=True, parallel=True)
def component_sums(values, labels, count, blocks):  # pragma: no cover - compiled
    """Sum (float64) of ``values`` and number of cells for each label ``0 .. count`` (label 0 is air).

    The planes are split into ``blocks`` (one per thread), each summed apart; the block sums are added at the
    end."""
    n0, n1, n2 = values.shape
    blocks = max(1, min(n0, blocks))
    sums = np.zeros((blocks, count + 1))
    sizes = np.zeros((blocks, count + 1), dtype=np.int64)
    for block in prange(blocks):
        block_sums = np.zeros(count + 1)  # the thread's own memory: no cache line shared with another thread
        block_sizes = np.zeros(count + 1, dtype=np.int64)
        for i in range(block * n0 // blocks, (block + 1) * n0 // blocks):
            for j in range(n1):
                for k in range(n2):
                    label = labels[i, j, k]
                    block_sums[label] += values[i, j, k]
                    block_sizes[label] += 1
        sums[block] = block_sums
        sizes[block] = block_sizes
    return sums.sum(axis=0), sizes.sum(axis=0)


@njit(cache=True, parallel=True)
def shifted_copy(source, shift0, shift1, shift2, out):  # pragma: no cover - compiled
    """``out[p] = source[p + shift]`` where that cell exists, else 0 (every cell of ``out`` written)."""
    n0, n1, n2 = out.shape
    m0, m1, m2 = source.shape
    for i in prange(n0):
        si = i + shift0
        for j in range(n1):
            sj = j + shift1
            inside = 0 <= si < m0 and 0 <= sj < m1
            for k in range(n2):
                sk = k + shift2
                if inside and 0 <= sk < m2:
                    out[i, j, k] = source[si, sj, sk]
                else:
                    out[i, j, k] = 0


@njit(cache=True, parallel=True)
def subtract_means(values, labels, means):  # pragma: no cover - compiled
    """``values -= means[label]`` on labelled cells, ``values = 0`` on label 0 (in place)."""
    n0, n1, n2 = values.shape
    for i in prange(n0):
        for j in range(n1):
            for k in range(n2):
                label = labels[i, j, k]
                if label == 0:
                    values[i, j, k] = 0
                else:
                    values[i, j, k] -= means[label]


@njit(cache=True)
def dense_matvec(matrix, vector):  # pragma: no cover - compiled
    """``matrix @ vector`` in float64 on one thread (the coarsest solve; BLAS threads only add contention)."""
    n, m = matrix.shape
    out = np.zeros(n)
    for i in range(n):
        total = 0.0
        for j in range(m):
            total += matrix[i, j] * np.float64(vector[j])
        out[i] = total
    return out
