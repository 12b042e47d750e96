"""Numba kernels of the head mask (``@njit`` only; the checked wrappers live in :mod:`._resample`).

Each parallel kernel only splits the work (``prange`` over chunks or planes) and calls a serial helper per
part: numba then vectorises the helpers' loops, and compiles them faster.  Kernels whose work is per run
rather than per voxel run serially.  Output arrays come from the caller.

Intensity kernels split a flat float32 array into ``nchunks`` contiguous chunks, chunk ``c`` holding
``c * n // nchunks <= p < (c + 1) * n // nchunks``; their results are integer counts and copied values in
array order, so they do not depend on the number of chunks.

Run-length connected components
-------------------------------
A boolean volume is read as planes ``i`` (``n0``) of rows ``x`` (``nx``) of voxels along the run axis ``r``
(``nr``), voxel ``(i, x, r)`` at ``v[i * s0 + x * sx + r * sr]`` of the flat array ``v``; any axis of a 3D array
can be the run axis.  A run is a maximal interval ``lo <= r < hi`` of voxels equal to ``target`` in one row.
Runs are stored row by row (row ``i * nx + x`` holds runs ``starts[row] .. starts[row + 1] - 1``, ordered by
``lo``), so run numbers follow the raster order of the runs' first voxels.  Two runs are connected when their
rows are neighbours within a plane (``x - 1``: ``within``) or across planes (``i - 1``, same ``x``: ``across``)
and their intervals overlap: 6-connectivity with both, 4-connectivity in the planes ``i = const`` (``within``
only) or ``x = const`` (``across`` only).  Union-find keeps the smallest run of a set as its root, which is
the component's first voxel in raster order.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = [
    "LANES",
    "chunk_count",
    "clipped_histogram",
    "component_sizes",
    "count_range",
    "count_runs",
    "find_runs",
    "gather_range",
    "hole_runs",
    "join_runs",
    "paint_runs",
    "row_ends",
]

#: Interleaved copies of the bins in :func:`clipped_histogram`, so that runs of equal bins do not wait on
#: each other's increments.
LANES = 4
_BLOCK = 1024


def chunk_count() -> int:
    """Number of chunks (and plane blocks) the parallel kernels split their work into: numba's thread count."""
    return get_num_threads()


@njit(cache=True)
def _chunk(c, nchunks, n):  # pragma: no cover - compiled
    """First and one-past-last element of chunk ``c``."""
    return c * n // nchunks, (c + 1) * n // nchunks


# --- intensities ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _count_range(a, low, high):  # pragma: no cover - compiled
    """The number of values below ``low`` and in ``low .. high``."""
    below = 0
    inside = 0
    for p in range(a.shape[0]):
        x = a[p]
        below += x < low
        inside += (x >= low) & (x <= high)
    return below, inside


@njit(cache=True, parallel=True)
def count_range(a, low, high, counts):  # pragma: no cover - compiled
    """``counts[c]`` (int64 ``(nchunks, 2)``): the number of values below ``low`` and in ``low .. high``."""
    nchunks = counts.shape[0]
    for c in prange(nchunks):
        start, stop = _chunk(c, nchunks, a.shape[0])
        counts[c, 0], counts[c, 1] = _count_range(a[start:stop], low, high)


@njit(cache=True)
def _gather_range(a, low, high, out):  # pragma: no cover - compiled
    """Copy the values in ``low .. high`` to ``out`` in array order."""
    q = 0
    for p in range(a.shape[0]):
        x = a[p]
        if low <= x <= high:
            out[q] = x
            q += 1


@njit(cache=True, parallel=True)
def gather_range(a, low, high, offsets, out):  # pragma: no cover - compiled
    """Copy the values in ``low .. high`` to ``out`` in array order, chunk ``c`` from ``offsets[c]``."""
    nchunks = offsets.shape[0] - 1
    for c in prange(nchunks):
        start, stop = _chunk(c, nchunks, a.shape[0])
        _gather_range(a[start:stop], low, high, out[offsets[c]:offsets[c + 1]])


@njit(cache=True)
def _clipped_counts(a, high, first_edge, denom, edges, counts):  # pragma: no cover - compiled
    """Add the histogram of ``np.minimum(a, high)`` to ``counts`` (``LANES`` rows); see :func:`clipped_histogram`."""
    nbins = edges.shape[0] - 1
    numerator = np.float32(nbins)
    index = np.empty(_BLOCK, np.int32)
    for s in range(0, a.shape[0], _BLOCK):
        m = min(_BLOCK, a.shape[0] - s)
        for t in range(m):  # vectorised: numpy's float32 estimate of the bin
            index[t] = np.int32((min(a[s + t], high) - first_edge) / denom * numerator)
        for t in range(m):  # numpy's corrections at the edges; the last edge belongs to the last bin
            x = min(a[s + t], high)
            b = index[t]
            if b == nbins:
                b -= 1
            if x < edges[b]:
                b -= 1
            elif x >= edges[b + 1] and b != nbins - 1:
                b += 1
            counts[t % LANES, b] += 1


@njit(cache=True, parallel=True)
def clipped_histogram(a, high, first_edge, denom, edges, counts):  # pragma: no cover - compiled
    """Add the histogram of ``np.minimum(a, high)`` over uniform float32 ``edges`` to ``counts``.

    ``counts`` is int64 ``(nchunks * LANES, nbins)``; its column sums are the counts of ``np.histogram``, whose
    float32 uniform-bin arithmetic is repeated: ``int((x - first_edge) / denom * nbins)``, then one bin down or
    up where the value lies below its bin's edge or on the next one.  ``edges`` must hold every clipped value.
    """
    nchunks = counts.shape[0] // LANES
    for c in prange(nchunks):
        start, stop = _chunk(c, nchunks, a.shape[0])
        _clipped_counts(a[start:stop], high, first_edge, denom, edges, counts[c * LANES:(c + 1) * LANES])


# --- runs ----------------------------------------------------------------------------------------------------


@njit(cache=True)
def _count_plane(v, target, base, nx, nr, sx, sr, counts):  # pragma: no cover - compiled
    """``counts[x]``: the number of runs in row ``x`` of the plane at ``base``."""
    for x in range(nx):
        row = base + x * sx
        runs = 0
        inside = False
        for r in range(nr):
            hit = v[row + r * sr] == target
            if hit and not inside:
                runs += 1
            inside = hit
        counts[x] = runs


@njit(cache=True, parallel=True)
def count_runs(v, target, n0, nx, nr, s0, sx, sr, counts):  # pragma: no cover - compiled
    """``counts[i * nx + x]``: the number of runs of ``target`` in row ``(i, x)``."""
    for i in prange(n0):
        _count_plane(v, target, i * s0, nx, nr, sx, sr, counts[i * nx:(i + 1) * nx])


@njit(cache=True)
def _find_plane(v, target, base, nx, nr, sx, sr, starts, lo, hi):  # pragma: no cover - compiled
    """Write the runs of the plane at ``base``, row ``x`` from ``starts[x]``."""
    for x in range(nx):
        row = base + x * sx
        q = starts[x]
        inside = False
        for r in range(nr):
            hit = v[row + r * sr] == target
            if hit and not inside:
                lo[q] = r
            elif inside and not hit:
                hi[q] = r
                q += 1
            inside = hit
        if inside:
            hi[q] = nr


@njit(cache=True, parallel=True)
def find_runs(v, target, n0, nx, nr, s0, sx, sr, starts, lo, hi):  # pragma: no cover - compiled
    """Write the runs of ``target``, row by row from ``starts[row]``, into ``lo`` and ``hi``."""
    for i in prange(n0):
        _find_plane(v, target, i * s0, nx, nr, sx, sr, starts[i * nx:(i + 1) * nx], lo, hi)


@njit(cache=True)
def _find(parent, p):  # pragma: no cover - compiled
    """Root of run ``p`` (path halving)."""
    while parent[p] != p:
        parent[p] = parent[parent[p]]
        p = parent[p]
    return p


@njit(cache=True)
def _join_rows(parent, lo, hi, a0, a1, b0, b1):  # pragma: no cover - compiled
    """Union the overlapping runs of two rows (runs ``a0 .. a1 - 1`` and ``b0 .. b1 - 1``); smaller root wins."""
    p = a0
    q = b0
    while p < a1 and q < b1:
        if lo[p] < hi[q] and lo[q] < hi[p]:
            rp = _find(parent, p)
            rq = _find(parent, q)
            if rp < rq:
                parent[rq] = rp
            elif rq < rp:
                parent[rp] = rq
        if hi[p] < hi[q]:
            p += 1
        else:
            q += 1


@njit(cache=True)
def _join_planes(parent, starts, lo, hi, i, nx):  # pragma: no cover - compiled
    """Union the overlapping runs of rows ``(i - 1, x)`` and ``(i, x)`` for every ``x``."""
    for x in range(nx):
        a = (i - 1) * nx + x
        b = i * nx + x
        _join_rows(parent, lo, hi, starts[a], starts[a + 1], starts[b], starts[b + 1])


@njit(cache=True)
def join_runs(parent, starts, lo, hi, n0, nx, within, across):  # pragma: no cover - compiled
    """Union-find over ``within`` and/or ``across`` neighbours: ``parent`` (``arange`` on entry) ends as roots."""
    for i in range(n0):
        if within:
            for x in range(1, nx):
                row = i * nx + x
                _join_rows(parent, lo, hi, starts[row - 1], starts[row], starts[row], starts[row + 1])
        if across and i > 0:
            _join_planes(parent, starts, lo, hi, i, nx)
    for p in range(parent.shape[0]):  # parents precede their children: one ascending pass reaches every root
        parent[p] = parent[parent[p]]


@njit(cache=True)
def hole_runs(starts, lo, hi, root, n0, nx, nr, within, across):  # pragma: no cover - compiled
    """Per run (bool): its component touches no border of the planes/rows that connect it (a hole)."""
    outside = np.zeros(lo.shape[0], np.bool_)
    for i in range(n0):
        plane_border = across and (i == 0 or i == n0 - 1)
        for x in range(nx):
            row_border = plane_border or (within and (x == 0 or x == nx - 1))
            for q in range(starts[i * nx + x], starts[i * nx + x + 1]):
                if row_border or lo[q] == 0 or hi[q] == nr:
                    outside[root[q]] = True
    holes = np.empty(lo.shape[0], np.bool_)
    for q in range(lo.shape[0]):
        holes[q] = not outside[root[q]]
    return holes


@njit(cache=True)
def component_sizes(lo, hi, root):  # pragma: no cover - compiled
    """Voxel count of every component, at the index of its root run (0 elsewhere), int64."""
    sizes = np.zeros(lo.shape[0], np.int64)
    for q in range(lo.shape[0]):
        sizes[root[q]] += hi[q] - lo[q]
    return sizes


@njit(cache=True)
def paint_runs(v, value, n0, nx, s0, sx, sr, starts, lo, hi, selected):  # pragma: no cover - compiled
    """Set every voxel of the runs with ``selected[run]`` to ``value``."""
    for row in range(n0 * nx):
        base = (row // nx) * s0 + (row % nx) * sx
        for q in range(starts[row], starts[row + 1]):
            if selected[q]:
                for r in range(lo[q], hi[q]):
                    v[base + r * sr] = value


# --- mask bounds ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _row_ends_plane(mask, first, last):  # pragma: no cover - compiled
    """First and last ``k`` of every row ``j`` of a 2D mask; -1 when the row is empty."""
    n1, n2 = mask.shape
    for j in range(n1):
        k = 0
        while k < n2 and not mask[j, k]:
            k += 1
        if k == n2:
            first[j] = -1
            last[j] = -1
            continue
        first[j] = k
        k = n2 - 1
        while not mask[j, k]:
            k -= 1
        last[j] = k


@njit(cache=True, parallel=True)
def row_ends(mask, first, last):  # pragma: no cover - compiled
    """First and last ``k`` with ``mask[i, j, k]`` per row into ``first``/``last`` (n0, n1) int64; -1 when none."""
    for i in prange(mask.shape[0]):
        _row_ends_plane(mask[i], first[i], last[i])
