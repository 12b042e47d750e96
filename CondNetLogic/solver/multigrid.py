"""Geometric multigrid for the SPFD potential, used as a preconditioner for conjugate gradients (MG-PCG).

Design (paper Sec. III-C solves Eq. 4 "based on a multi-grid method with successive over-relaxation")
--------------------------------------------------------------------------------------------------------
* Cell-centred 7-point operator stored per level as face conductances ``w`` (3, n0, n1, n2) rather than a
  sparse matrix: ``(L x)_p = sum_f w_f (x_p - x_q)``.  The working grid is the conductor's bounding box plus
  one air voxel on every side, so kernels visit the interior only and never test bounds.
* Coarsening by 2 along every axis; piecewise-constant prolongation ``P`` and restriction ``R = P^T``
  (sum over the 8 children).  Across a 200x conductivity jump a smooth interpolation mixes values from both
  sides of the jump; constant transfer never does.
* Coarse conductances: each coarse face gets ``coarse_scale`` times the sum of the 2 x 2 fine faces that
  cross it.  With ``coarse_scale = 1`` this is exactly the Galerkin operator ``P^T L P`` (the graph of the
  coarse cells keeps every fine connection, so conductivity jumps and thin skull layers are inherited
  exactly and no island is merged or split).  With ``coarse_scale = 1/2`` it is the series/parallel upscaling
  of the fine harmonic faces: the path between two coarse centres crosses two whole fine voxels in series
  (whose series conductivity is the fine harmonic face itself) and four such paths act in parallel over the
  4x larger face, i.e. the mean of the four crossing faces at twice the distance.  Constant-transfer
  Galerkin alone is known to under-correct smooth errors by about 2 on every level (Braess 1995; Mohr and
  Wienands 2004), which makes the iteration count grow with the number of levels; the 1/2 scaling removes
  that.  The default was chosen by measurement (see ``benchmarks/bench_solver.py --study``).
* Smoother: red-black SOR in numba (parallel over the outer axis).  The symmetric V-cycle (pre-smoothing
  red then black, post-smoothing black then red) with a symmetric positive semi-definite coarsest solve is
  an SPD preconditioner for any SPD coarse operator, so CG is safe even when the coarse operator is not
  Galerkin; so is the W-cycle (the same cycle twice).  The F-cycle (an F-cycle then a V-cycle on the next
  level, the torch default) is not symmetric; the flexible CG below absorbs that as it does float32 rounding.
* The coarsest level (at most ``max_coarse`` unknowns) is solved with its Moore-Penrose pseudo-inverse,
  computed once in float64: one null vector per connected component, so floating potentials and separate
  islands are handled on every level.
* Mixed precision: CG, the operator it applies and the returned potential are in ``dtype`` (float64 by
  default) while the cycles run in ``cycle_dtype`` (float32 by default), on their own copy of the level
  conductances; the residual is cast down before a cycle and the correction cast up after it.  The
  smoother is memory bound, so float32 cycles take less time (0.75-0.9x), and the float64 residual keeps
  falling to 1e-11 and below (a float32 solve stalls near 1e-5).  CG is the flexible (Polak-Ribiere) form,
  which tolerates the slightly non-symmetric rounding of such a preconditioner (Notay 2000).
* Pure Neumann problem: the right-hand side is projected onto the range of the operator (zero sum per
  connected component), PCG runs on the consistent singular system (Kaasschieter 1988), and the solution is
  shifted to zero mean on each component.

References
----------
D. Braess, "Towards algebraic multigrid for elliptic problems of second order", Computing 55, 379-393, 1995.
R. Mohr and R. Wienands, "Cell-centred multigrid revisited", Comput. Visual. Sci. 7, 129-140, 2004.
E. F. Kaasschieter, "Preconditioned conjugate gradients for solving singular systems", J. Comput. Appl. Math.
24, 265-275, 1988.
Y. Notay, "Flexible conjugate gradients", SIAM J. Sci. Comput. 22, 1444-1460, 2000.
I. Laakso and A. Hirata, "Fast multigrid-based computation of the induced electric field for transcranial
magnetic stimulation", Phys. Med. Biol. 57, 7753-7765, 2012, doi:10.1088/0031-9155/57/23/7753.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Optional

import numpy as np

from ..errors import Cancelled, is_out_of_memory
from .spfd import (
    _check_spacing,
    conductor_components,
    face_conductances,
    validate_dadt_faces,
    validate_sigma,
)

__all__ = [
    "PotentialSolver",
    "apply_operator",
    "divergence",
    "project_components",
    "row_bounds",
    "cg_direction",
    "cg_update",
    "coarse_shape",
    "coarsen_faces",
    "dot",
    "prolong_add",
    "rb_sor_sweep",
    "residual",
    "restrict_sum",
    "solve_potential",
]

logger = logging.getLogger(__name__)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@contextlib.contextmanager
def _numba_threads_given_back(backend):
    """Give the caller its numba thread count back after a solve on ``backend`` when it is the numba one: the serial
    levels set the count to 1 (:class:`NumbaBackend`), and numba keeps it for every later parallel kernel of the
    calling thread (the next primary field, the field step, the next solver's setup would run on one thread)."""
    if not isinstance(backend, NumbaBackend):
        yield
        return
    import numba

    threads = numba.get_num_threads()
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def _kernels():
    """The numba kernel module, imported (and its kernels compiled) on first use."""
    from . import _kernels

    return _kernels


# ----------------------------------------------------------------------------------------------------------
# Checked wrappers around the numba kernels
# ----------------------------------------------------------------------------------------------------------
def _check(**arrays) -> np.dtype:
    """Check that all arrays are C-contiguous float32/float64 ndarrays of one dtype; return that dtype."""
    dtype = None
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array; got {type(array).__name__}")
        if array.dtype not in _FLOATS:
            raise TypeError(f"{name} must be float32 or float64; got {array.dtype}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray); got strides {array.strides}")
        if dtype is None:
            dtype = array.dtype
        elif array.dtype != dtype:
            first = next(iter(arrays))
            raise TypeError(f"mixed precision: {name} is {array.dtype} but {first} is {dtype}")
    return dtype


def _check_grid(x: np.ndarray, **others) -> None:
    """Check that ``x`` is a 3-D grid of at least 3 cells per axis and ``others`` share its shape."""
    if x.ndim != 3 or min(x.shape) < 3:
        raise ValueError(f"grids must be 3-D with >= 3 cells per axis (air boundary layer); got {x.shape}")
    for name, array in others.items():
        if array.shape != x.shape:
            raise ValueError(f"{name} must have shape {x.shape}; got {array.shape}")


def _check_faces(w: np.ndarray, shape: tuple) -> None:
    if w.shape != (3,) + tuple(shape):
        raise ValueError(f"w must have shape {(3,) + tuple(shape)}; got {w.shape}")


def coarse_shape(shape) -> tuple:
    """Shape of the next coarser level: ``ceil((n - 2) / 2) + 2`` per axis (interior halved, air layer kept).

    >>> coarse_shape((10, 9, 3))
    (6, 6, 3)
    """
    return tuple(int(-(-(n - 2) // 2)) + 2 for n in shape)


def row_bounds(w: np.ndarray) -> np.ndarray:
    """Conductive span of every ``(i, j)`` row: ``rows`` (2, n0, n1) int64, ``rows[0] <= k < rows[1]``.

    The operator kernels visit only these spans; outside them every cell is air with no conductive face.
    """
    _check(w=w)
    if w.ndim != 4 or w.shape[0] != 3:
        raise ValueError(f"w must have shape (3, n0, n1, n2); got {w.shape}")
    _check_grid(w[0])
    rows = np.empty((2,) + w.shape[1:3], dtype=np.int64)
    _kernels().row_bounds(w, rows)
    return rows


def _rows_for(w: np.ndarray, rows) -> np.ndarray:
    if rows is None:
        return row_bounds(w)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.int64 or rows.shape != (2,) + w.shape[1:3] \
            or not rows.flags.c_contiguous:
        raise ValueError(f"rows must be a C-contiguous int64 array of shape {(2,) + w.shape[1:3]} "
                         "from row_bounds(w)")
    return rows


def rb_sor_sweep(x: np.ndarray, b: np.ndarray, w: np.ndarray, omega: float, color: int, rows=None) -> None:
    """One red-black SOR half-sweep of ``L x = b`` over cells with ``(i + j + k) % 2 == color``.

    ``x`` is modified in place; ``omega`` is the relaxation factor (1 = Gauss-Seidel); ``rows`` from
    :func:`row_bounds` (computed when omitted).
    """
    _check(x=x, b=b, w=w)
    _check_grid(x, b=b)
    _check_faces(w, x.shape)
    if color not in (0, 1):
        raise ValueError(f"color must be 0 (red) or 1 (black); got {color}")
    if not 0 < omega < 2:
        raise ValueError(f"omega must lie in (0, 2); got {omega}")
    _kernels().rb_sor_sweep(x, b, w, _rows_for(w, rows), x.dtype.type(omega), np.int64(color))


def residual(x: np.ndarray, b: np.ndarray, w: np.ndarray, r: np.ndarray, rows=None) -> float:
    """``r = b - L x`` (``r`` modified in place); returns ``||r||^2``.

    Written only on the conductive row spans (:func:`row_bounds`); elsewhere ``r`` keeps its values, which
    the solver keeps at zero (``b`` is zero on cells without a conductive face).
    """
    _check(x=x, b=b, w=w, r=r)
    _check_grid(x, b=b, r=r)
    _check_faces(w, x.shape)
    return float(_kernels().residual(x, b, w, _rows_for(w, rows), r))


def apply_operator(x: np.ndarray, w: np.ndarray, y: np.ndarray, rows=None) -> float:
    """``y = L x`` (``y`` modified in place on the conductive row spans, zero elsewhere); returns ``x . y``."""
    _check(x=x, w=w, y=y)
    _check_grid(x, y=y)
    _check_faces(w, x.shape)
    return float(_kernels().apply_operator(x, w, _rows_for(w, rows), y))


def restrict_sum(rf: np.ndarray, rc: np.ndarray) -> None:
    """Restriction ``rc = P^T rf`` (sum over the 2 x 2 x 2 children); ``rc`` modified in place."""
    _check(rf=rf, rc=rc)
    _check_grid(rf)
    if rc.shape != coarse_shape(rf.shape):
        raise ValueError(f"rc must have shape {coarse_shape(rf.shape)} for rf {rf.shape}; got {rc.shape}")
    _kernels().restrict_sum(rf, rc)


def prolong_add(ec: np.ndarray, xf: np.ndarray) -> None:
    """Prolongation ``xf += P ec`` (each fine cell gets its parent's value); ``xf`` modified in place."""
    _check(ec=ec, xf=xf)
    _check_grid(xf)
    if ec.shape != coarse_shape(xf.shape):
        raise ValueError(f"ec must have shape {coarse_shape(xf.shape)} for xf {xf.shape}; got {ec.shape}")
    _kernels().prolong_add(ec, xf)


def coarsen_faces(wf: np.ndarray, coarse_scale: float) -> np.ndarray:
    """Coarse face conductances: ``coarse_scale`` times the sum of the 2 x 2 fine faces crossing each face.

    Parameters
    ----------
    wf : ndarray (3, n0, n1, n2)
        Fine face conductances (see :mod:`CondNetLogic.solver._kernels` for the layout).
    coarse_scale : float
        1 gives the Galerkin operator ``P^T L P``; 1/2 the series/parallel upscaling.

    Returns
    -------
    wc : ndarray (3,) + coarse_shape((n0, n1, n2)), dtype of ``wf``.
    """
    _check(wf=wf)
    if wf.ndim != 4 or wf.shape[0] != 3:
        raise ValueError(f"wf must have shape (3, n0, n1, n2); got {wf.shape}")
    _check_grid(wf[0])
    if not coarse_scale > 0:
        raise ValueError(f"coarse_scale must be positive; got {coarse_scale}")
    wc = np.empty((3,) + coarse_shape(wf.shape[1:]), dtype=wf.dtype)
    _kernels().coarsen_faces(wf, wc, wf.dtype.type(coarse_scale))
    return wc


def divergence(w: np.ndarray, faces: tuple, lo, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """Right-hand side ``scale * sum_f s_f w_f a_f`` on a working grid (array of the dtype of ``w``).

    Parameters
    ----------
    w : ndarray (3, n0, n1, n2)
        Face conductances of the working grid.
    faces : tuple of 3 ndarray
        The input's face values ``(ax (I-1, J, K), ay, az)`` (V/m); float32 or float64 arrays are read as
        they are (no copy), other dtypes are cast to the dtype of ``w``.
    lo : sequence of 3 ints
        Working cell ``p`` is input voxel ``p + lo``.
    scale : float
        Factor (the voxel size in metres for the solver's scaling).
    out : ndarray (n0, n1, n2), optional
        Filled and returned (a buffer reused between solves); C-contiguous, of the dtype of ``w``.
    """
    _check(w=w)
    if w.ndim != 4 or w.shape[0] != 3:
        raise ValueError(f"w must have shape (3, n0, n1, n2); got {w.shape}")
    _check_grid(w[0])
    if len(faces) != 3:
        raise ValueError(f"faces must hold three arrays; got {len(faces)}")
    arrays = [np.ascontiguousarray(face, dtype=face.dtype if face.dtype in _FLOATS else w.dtype)
              for face in map(np.asarray, faces)]
    shape = tuple(arrays[1].shape[0:1]) + tuple(arrays[0].shape[1:])
    for axis, array in enumerate(arrays):
        expected = tuple(n - (d == axis) for d, n in enumerate(shape))
        if array.shape != expected:
            raise ValueError(f"faces[{axis}] must have shape {expected}; got {array.shape}")
    lo = [int(v) for v in lo]
    for axis in range(3):
        if lo[axis] + 1 < 0 or lo[axis] + w.shape[1 + axis] - 1 > shape[axis]:
            raise ValueError(f"working grid {w.shape[1:]} at offset {lo} does not wrap the input {shape}")
    if out is None:
        out = np.zeros(w.shape[1:], dtype=w.dtype)
    else:
        _check(out=out)
        if out.shape != w.shape[1:] or out.dtype != w.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {w.dtype} array of shape {w.shape[1:]}; "
                             f"got {out.dtype} {out.shape}")
        for axis in range(3):  # the kernel writes the interior only
            out[tuple(0 if d == axis else slice(None) for d in range(3))] = 0
            out[tuple(-1 if d == axis else slice(None) for d in range(3))] = 0
    _kernels().divergence(w, arrays[0], arrays[1], arrays[2], np.int64(lo[0]), np.int64(lo[1]), np.int64(lo[2]),
                          float(scale), out)
    return out


def project_components(values: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Subtract the mean of each labelled component and zero label 0 (``values`` modified in place).

    ``labels`` (int32, as from :func:`~CondNetLogic.solver.spfd.conductor_components`) holds ``0 .. count``.
    Returns the float64 sums of ``values`` per label before the projection.
    """
    _check(values=values)
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.shape != values.shape \
            or not labels.flags.c_contiguous:
        raise ValueError(f"labels must be a C-contiguous int32 array of shape {values.shape}")
    if labels.size and not 0 <= int(labels.min()) <= int(labels.max()) <= int(count):
        raise ValueError(f"labels must lie in [0, {count}]; got [{labels.min()}, {labels.max()}]")
    import numba

    sums, sizes = _kernels().component_sums(values, labels, np.int64(count), np.int64(numba.get_num_threads()))
    means = sums / np.maximum(sizes, 1)
    _kernels().subtract_means(values, labels, means.astype(values.dtype))
    return sums


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two grids, accumulated in float64."""
    _check(a=a, b=b)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"a and b must be 3-D of one shape; got {a.shape} and {b.shape}")
    return float(_kernels().dot(a, b))


def cg_update(x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray, alpha: float) -> float:
    """``x += alpha p``, ``r -= alpha q`` in place; returns ``||r||^2``."""
    dtype = _check(x=x, r=r, p=p, q=q)
    if x.ndim != 3:
        raise ValueError(f"x must be 3-D; got shape {x.shape}")
    _check_grid(x, r=r, p=p, q=q)
    return float(_kernels().cg_update(x, r, p, q, dtype.type(alpha)))


def cg_direction(p: np.ndarray, z: np.ndarray, beta: float) -> None:
    """``p = z + beta p`` in place."""
    dtype = _check(p=p, z=z)
    _check_grid(p, z=z)
    _kernels().cg_direction(p, z, dtype.type(beta))


# ----------------------------------------------------------------------------------------------------------
# Levels and the coarsest solve
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Level:
    """One grid of the hierarchy: face conductances ``w`` (3, n0, n1, n2), float of the solver dtype."""

    w: np.ndarray
    unknowns: int
    rows: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.w.shape[1:]


def _conductive_cells(w: np.ndarray) -> np.ndarray:
    """Cells with at least one conductive face (the unknowns of a level)."""
    touched = np.zeros(w.shape[1:], dtype=bool)
    for axis in range(3):
        on = w[axis] > 0
        touched |= on
        touched[tuple(slice(1, None) if d == axis else slice(None) for d in range(3))] |= on[
            tuple(slice(None, -1) if d == axis else slice(None) for d in range(3))]
    return touched


def _sparse_from_faces(w: np.ndarray, cells: np.ndarray):
    """``L`` of a level as a float64 CSR matrix over the flat indices ``cells``."""
    from scipy import sparse

    shape = w.shape[1:]
    index = np.full(int(np.prod(shape)), -1, dtype=np.int64)
    index[cells] = np.arange(cells.size, dtype=np.int64)
    index = index.reshape(shape)
    rows, cols, vals = [], [], []
    diagonal = np.zeros(cells.size)
    for axis in range(3):
        lo = tuple(slice(None, -1) if d == axis else slice(None) for d in range(3))
        hi = tuple(slice(1, None) if d == axis else slice(None) for d in range(3))
        face = w[axis][lo].astype(np.float64)
        on = face > 0
        p, q, value = index[lo][on], index[hi][on], face[on]
        rows += [p, q]
        cols += [q, p]
        vals += [-value, -value]
        diagonal += np.bincount(p, value, cells.size) + np.bincount(q, value, cells.size)
    rows.append(np.arange(cells.size))
    cols.append(np.arange(cells.size))
    vals.append(diagonal)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(cells.size, cells.size))


def coarse_pseudo_inverse(w: np.ndarray) -> tuple:
    """Moore-Penrose pseudo-inverse of a level's operator, for the coarsest solve.

    Parameters
    ----------
    w : ndarray (3, n0, n1, n2)
        Face conductances of the level.

    Returns
    -------
    cells : ndarray (n,) int64
        Flat indices of the cells with a conductive face.
    pinv : ndarray (n, n) float64
        ``L^+``: symmetric positive semi-definite; ``L^+ r`` solves ``L e = r`` for ``r`` with zero sum on
        each connected component and has zero mean on each component.

    Notes
    -----
    One cell per component is pinned (its row and column removed), the rest is inverted by Cholesky, and
    the result ``G`` is projected, ``L^+ = Q G Q`` with ``Q`` the per-component mean removal.
    """
    from scipy import linalg
    from scipy.sparse.csgraph import connected_components

    cells = np.flatnonzero(_conductive_cells(w)).astype(np.int64)
    if cells.size == 0:
        return cells, np.zeros((0, 0))
    matrix = _sparse_from_faces(w, cells)
    count, labels = connected_components(matrix, directed=False)
    pinned = np.zeros(cells.size, dtype=bool)
    pinned[np.unique(labels, return_index=True)[1]] = True
    keep = np.flatnonzero(~pinned)
    inverse = np.zeros((cells.size, cells.size))
    if keep.size:
        reduced = matrix[keep][:, keep].toarray()
        inverse[np.ix_(keep, keep)] = linalg.cho_solve(linalg.cho_factor(reduced), np.eye(keep.size))
    averaging = np.zeros((cells.size, count))
    averaging[np.arange(cells.size), labels] = 1.0
    averaging /= np.sqrt(averaging.sum(axis=0))
    projected = inverse - averaging @ (averaging.T @ inverse)
    projected = projected - (projected @ averaging) @ averaging.T
    return cells, 0.5 * (projected + projected.T)


# ----------------------------------------------------------------------------------------------------------
# Backends: the same cycle and CG run on numba (CPU) or torch (CPU or CUDA) arrays
# ----------------------------------------------------------------------------------------------------------
class NumbaBackend:
    """Multigrid primitives on numpy arrays through the numba kernels (CPU).

    Levels with fewer than ``serial_below`` cells run their kernels on one thread: there the cost of
    waking the worker threads exceeds the work (measured 8x slower on a loaded 2-core machine at 64^3).
    """

    name = "numba"
    device = "cpu"
    #: Cycles are not replayed from CUDA graphs (:meth:`TorchBackend.capture`).
    graphs = False

    def __init__(self, levels: list, dtype: np.dtype, cells: np.ndarray | None = None,
                 pinv: np.ndarray | None = None, *, serial_below: int = 2**17):
        import numba

        self.dtype = np.dtype(dtype)
        self.w = [level.w for level in levels]
        self.rows = [level.rows for level in levels]
        self.cells = cells
        # The coarsest solve reads the whole dense matrix each time: keep it in the working dtype.
        self.pinv = None if pinv is None else pinv.astype(self.dtype, copy=False)
        self._coarse_r = np.zeros(levels[-1].shape, dtype=dtype) if pinv is not None else None
        self._set_threads = numba.set_num_threads
        most = numba.get_num_threads()
        self._threads = [most if int(np.prod(level.shape)) >= serial_below else 1 for level in levels]

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def from_numpy(self, array):
        return np.ascontiguousarray(array, dtype=self.dtype)

    def to_numpy(self, array):
        return array

    @staticmethod
    def fill_zero(array):
        array.fill(0)

    def _on(self, level):
        self._set_threads(self._threads[level])

    def sweep(self, level, x, b, omega, color):
        self._on(level)
        _kernels().rb_sor_sweep(x, b, self.w[level], self.rows[level], x.dtype.type(omega), np.int64(color))

    def residual(self, level, x, b, r, norm: bool = True):
        """``r = b - A x`` on ``level``; returns ``|r|^2`` either way (the kernel sums it in the same pass)."""
        self._on(level)
        return float(_kernels().residual(x, b, self.w[level], self.rows[level], r))

    def apply(self, level, x, y):
        self._on(level)
        return float(_kernels().apply_operator(x, self.w[level], self.rows[level], y))

    def restrict(self, level, rf, rc):
        self._on(level)
        _kernels().restrict_sum(rf, rc)

    def prolong_add(self, level, ec, xf):
        self._on(level)
        _kernels().prolong_add(ec, xf)

    def coarse_solve(self, level, x, b):
        self._on(level)
        r = self._coarse_r
        _kernels().residual(x, b, self.w[level], self.rows[level], r)
        flat = x.reshape(-1)
        flat[self.cells] += _kernels().dense_matvec(self.pinv, r.reshape(-1)[self.cells]).astype(self.dtype)

    def dot(self, a, b):
        self._on(0)
        return float(_kernels().dot(a, b))

    def dot_pair(self, a, b, c):
        """``(a . b, c . b)`` in one pass."""
        self._on(0)
        first, second = _kernels().dot_pair(a, b, c)
        return float(first), float(second)

    def rhs(self, faces, lo, scale: float, b) -> None:
        """``b`` = the right-hand side on level 0 from the input's face arrays (:func:`divergence`)."""
        self._on(0)
        divergence(self.w[0], faces, lo, scale, out=b)

    def cast(self, level, source, target):
        """``target = source`` on the conductive spans of ``level``, in the dtype of ``target``."""
        self._on(level)
        _kernels().copy_spans(source, target, self.rows[level])

    def cg_update(self, x, r, p, q, alpha):
        self._on(0)
        return float(_kernels().cg_update(x, r, p, q, self.dtype.type(alpha)))

    def cg_direction(self, p, z, beta):
        self._on(0)
        _kernels().cg_direction(p, z, self.dtype.type(beta))

    @staticmethod
    def host_mirror(array):
        """The host array behind ``array``: the array itself (see ``TorchBackend.host_mirror``)."""
        return array

    @staticmethod
    def push(array):
        """Nothing to copy: the work arrays live on the host."""

    pull = push

    @staticmethod
    def component_labels(labels: np.ndarray, count: int) -> tuple:
        """The argument of :meth:`project_components`."""
        return labels, count

    @staticmethod
    def project_components(x, labels) -> None:
        """Zero mean on each connected component, 0 on air (in place)."""
        project_components(x, *labels)


# ----------------------------------------------------------------------------------------------------------
# Working grid: the conductor's bounding box plus one air voxel on each side
# ----------------------------------------------------------------------------------------------------------
def _embed(source: np.ndarray, lo, shape, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """An array of ``shape`` (``out``, else a new one) whose cell ``p`` is ``source[p + lo]`` where that exists,
    else 0 (in parallel: a fresh array's pages are first touched by all threads)."""
    if out is None:
        out = np.empty(shape, dtype=dtype)
    _kernels().shifted_copy(source, *(np.int64(v) for v in lo), out)
    return out


def _checked_faces(dadt_faces, shape) -> tuple:
    """:func:`~CondNetLogic.solver.spfd.validate_dadt_faces` without its NaN/inf test: the solve tests the norm of
    its right-hand side and ``voxel_field`` the field it computes, which hold every face value they read (between
    conductive voxels), at no cost (a separate test of 50 M values on a 256^3 grid took 3.5 ms of a 58 ms GPU
    solve)."""
    return validate_dadt_faces(dadt_faces, shape, check_finite=False)


_SMOOTHERS = ("sor", "gauss_seidel")
_CYCLES = ("V", "W", "F")


def _cuda_available() -> bool:
    """Whether torch sees a CUDA device, without importing torch (about 2 s) where its build cannot have one.

    A missing torch, or a CPU-only build (versions tagged ``+cpu``, as the CPU wheels of download.pytorch.org
    are), is known from the package metadata alone; otherwise torch is imported and asked.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            return False
        if version.partition("+")[2].startswith("cpu"):
            return False
        try:
            import torch
        except ImportError:
            return False
    return bool(torch.cuda.is_available())


class PotentialSolver:
    """Reusable MG-PCG solver of the SPFD equation for one conductivity (many right-hand sides).

    Build once from ``sigma``; call :meth:`solve` for each coil position.

    Parameters
    ----------
    sigma : ndarray (I, J, K)
        Conductivity in S/m, 0 for air.  Not modified.
    spacing_m : float
        Isotropic voxel size in metres.
    device : {"cpu", "cuda", "auto"} or torch device string
        ``"auto"`` picks CUDA when torch sees a device, else the CPU.  When CUDA runs out of memory (while
        setting up or solving) the solver goes on with the numba backend on the CPU, logs a warning and
        lists the message in ``fallbacks`` and in each solve's ``info``.
    dtype : np.float64 or np.float32
        Precision of the solution: of the operator, the CG vectors and the residual tested against ``tol``
        (default float64).
    cycle_dtype : np.float32 or np.float64
        Precision of the multigrid preconditioner (default float32).  A preconditioner only has to
        approximate the inverse, so float32 cycles cost half the memory traffic of float64 ones while CG in
        ``dtype`` still reaches its residual (mixed-precision MG-PCG; flexible CG absorbs the rounding
        asymmetry of the cycle).  Measured with ``benchmarks/bench_solver.py`` on a 256^3 head phantom
        (2-core CPU, 8 iterations each): 0.97 s against 1.11-1.32 s with float64 cycles.
    smoother : (name, kwargs)
        ``("sor", {"omega": 1.15, "sweeps": 2})`` red-black SOR with ``sweeps`` pre- and post-smoothing
        steps (default); ``("gauss_seidel", {"sweeps": 2})`` is the same with ``omega = 1``.
    cycle : {"auto", "V", "W", "F"}
        Multigrid cycle; each level corrects with one cycle on the next (V), two (W), or an F-cycle then a
        V-cycle (F: level ``k`` visited ``k + 1`` times a cycle, against ``2^k`` for W; the coarsest level as
        often as the one above it).  ``"auto"``: W on the numba backend (half the CPU time of V at 128^3: 7
        instead of 14 iterations for a cost per cycle about 1.2x; F ties with W there), F on torch, whose
        coarse levels are bound by kernel launches on a GPU: as few iterations as W (8 against V's 12 on the
        256^3 phantom of ``benchmarks/bench_solver.py``) for fewer coarse visits (the torch code on 2 CPU
        cores: CG loop 2.11 s, against 2.25 s with W and 3.46 s with V).
    accel : {"cg", None}
        ``"cg"``: the cycle preconditions CG (default, robust).  ``None``: stand-alone cycles.
    coarse_scale : float
        Factor applied to the summed crossing fine faces on each coarsening (see module notes): 0.5
        series/parallel upscaling (default), 1.0 Galerkin.
    max_coarse : int
        Coarsen until a level has at most this many unknowns (at most 5000); that level is solved exactly
        with a dense pseudo-inverse.
    backend : {"auto", "numba", "torch"}
        ``"auto"``: numba on the CPU, torch on CUDA.  ``"torch"`` on ``device="cpu"`` runs the GPU code on
        the CPU (tests).
    compile : bool
        Wrap the torch smoother, residual and operator product (of the cycles and of CG) in ``torch.compile``
        (torch backend only; off by default).
    progress : callable, optional
        ``progress(fraction, message)`` between the setup's stages (a GUI repaints there).
    cancel : callable, optional
        ``cancel() -> bool``, asked between the setup's stages.

    Raises
    ------
    TypeError, ValueError
        For bad ``sigma``, spacing, dtype or options (messages give expected and actual values).
    Cancelled
        When ``cancel()`` returns true during the setup.

    Examples
    --------
    >>> sigma = np.zeros((6, 6, 6)); sigma[1:5, 1:5, 1:5] = 0.3
    >>> PotentialSolver(sigma, 1e-3).levels[0].unknowns
    64
    """

    def __init__(self, sigma, spacing_m: float, *, device="cpu", dtype=np.float64, cycle_dtype=np.float32,
                 smoother=("sor", {"omega": 1.15, "sweeps": 2}), cycle: str = "auto", accel="cg",
                 coarse_scale: float = 0.5,
                 max_coarse: int = 1000, backend: str = "auto", compile: bool = False,
                 progress: Optional[Callable[[float, str], None]] = None,
                 cancel: Optional[Callable[[], bool]] = None):
        start = time.perf_counter()

        def stage(fraction: float, message: str) -> None:
            if cancel is not None and cancel():
                raise Cancelled("solver setup cancelled")
            if progress is not None:
                progress(fraction, message)

        sigma = validate_sigma(sigma)
        self.spacing_m = _check_spacing(spacing_m)
        self.dtype = self._parse_dtype(dtype, "dtype")
        self.cycle_dtype = self._parse_dtype(cycle_dtype, "cycle_dtype")
        self._smoother = self._parse_smoother(smoother)
        if cycle not in ("auto",) + _CYCLES:
            raise ValueError(f"cycle must be 'auto', 'V', 'W' or 'F'; got {cycle!r}")
        if accel not in ("cg", None):
            raise ValueError(f"accel must be 'cg' or None; got {accel!r}")
        if not 0 < coarse_scale <= 1:
            raise ValueError(f"coarse_scale must lie in (0, 1]; got {coarse_scale}")
        if not 1 <= int(max_coarse) <= 5000:
            raise ValueError(f"max_coarse must lie in [1, 5000] (the coarsest level is inverted densely); "
                             f"got {max_coarse}")
        self.cycle, self.accel, self.coarse_scale, self.max_coarse = cycle, accel, float(coarse_scale), int(max_coarse)
        self.device = self._pick_device(device, backend)
        if compile and self.backend_name != "torch":
            raise ValueError(f"compile=True (--compile) needs the torch backend, a CUDA device or backend='torch'; "
                             f"the device here is {self.device}")
        self.shape = sigma.shape

        conductive = sigma > 0
        nonzero = np.nonzero(np.any(conductive, axis=(1, 2))), np.nonzero(np.any(conductive, axis=(0, 2))), \
            np.nonzero(np.any(conductive, axis=(0, 1)))
        box_lo = np.array([axis[0][0] for axis in nonzero])
        box_hi = np.array([axis[0][-1] for axis in nonzero])
        self._lo = box_lo - 1
        self._work_shape = tuple(int(n) for n in box_hi - box_lo + 3)
        work_sigma = _embed(sigma, self._lo, self._work_shape, np.float64)
        stage(0.0, "finding the conductors")
        labels, self.components = conductor_components(work_sigma)
        self._labels = labels

        stage(0.1, "face conductances")
        w0 = np.zeros((3,) + self._work_shape, dtype=self.dtype)
        for axis, g in enumerate(face_conductances(work_sigma)):
            w0[axis][tuple(slice(None, -1) if d == axis else slice(None) for d in range(3))] = g
        #: The operator of the solution (``dtype``); ``levels`` are the preconditioner's (``cycle_dtype``).
        self.operator = Level(w0, int(np.count_nonzero(labels)), row_bounds(w0))
        self.levels = [self.operator if self.cycle_dtype == self.dtype else
                       Level(w0.astype(self.cycle_dtype), self.operator.unknowns, self.operator.rows)]
        while self.levels[-1].unknowns > self.max_coarse and len(self.levels) < 24:
            stage(0.3 + 0.4 * (1.0 - self.levels[-1].unknowns / self.levels[0].unknowns),
                  f"coarse level {len(self.levels)}")
            wc = coarsen_faces(self.levels[-1].w, self.coarse_scale)
            self.levels.append(Level(wc, int(np.count_nonzero(_conductive_cells(wc))), row_bounds(wc)))
        stage(0.7, "coarsest-level inverse")
        self._coarse = coarse_pseudo_inverse(self.levels[-1].w)
        stage(0.8, f"preparing the {self.backend_name} kernels ({self.device})")
        self._cycle_requested = cycle
        #: What happened instead of the request (a CUDA out-of-memory error moved the work to the CPU).
        self.fallbacks: list = []
        try:
            self._build_backends(compile)
        except Exception as err:  # noqa: BLE001 - anything but a CUDA out-of-memory error is re-raised
            self._fall_back_if_out_of_memory(err, "setting up")
        self.time_setup_s = time.perf_counter() - start
        logger.info("PotentialSolver: %d levels, %d unknowns, %d component(s), %s/%s %s, setup %.3f s",
                    len(self.levels), self.levels[0].unknowns, self.components, self.backend_name, self.device,
                    self.dtype, self.time_setup_s)

    def _build_backends(self, compile: bool) -> None:
        """The cycle backend (``cycle_dtype``, every level) and the CG one (``dtype``, level 0) for the device."""
        cells, pinv = self._coarse
        self._backend = self._outer = self._work = None
        if self._cycle_requested == "auto":
            self.cycle = "F" if self.backend_name == "torch" else "W"
        if self.backend_name == "torch":
            from .torch_backend import TorchBackend

            # A float32 CG needs the operator's products in the difference form (TorchBackend's ``differences``).
            differences = self.dtype == np.float32
            self._backend = TorchBackend(self.levels, self.cycle_dtype, cells, pinv, self.device, compile=compile,
                                         differences=differences)
            self._outer = self._backend if self._same_dtypes else \
                TorchBackend([self.operator], self.dtype, None, None, self.device, compile=compile,
                             differences=differences)
        else:
            self._backend = NumbaBackend(self.levels, self.cycle_dtype, cells, pinv)
            self._outer = self._backend if self._same_dtypes else NumbaBackend([self.operator], self.dtype)

    def _fall_back_if_out_of_memory(self, error: Exception, stage: str) -> None:
        """Re-raise ``error`` unless it is a CUDA out-of-memory error; then go on with the numba backend (CPU)."""
        if self.backend_name != "torch" or not self.device.startswith("cuda") or not is_out_of_memory(error):
            raise error
        message = (f"CUDA out of memory while {stage} the solver ({self.levels[0].unknowns} unknowns): "
                   "continuing on the CPU (slower)")
        logger.warning(message)
        self.fallbacks.append(message)
        self._backend = self._outer = self._work = None
        import torch

        torch.cuda.empty_cache()
        self.device, self.backend_name = "cpu", "numba"
        self._build_backends(compile=False)

    @property
    def _same_dtypes(self) -> bool:
        return self.cycle_dtype == self.dtype

    @staticmethod
    def _parse_dtype(dtype, name: str) -> np.dtype:
        try:
            parsed = np.dtype(dtype)
        except TypeError as err:
            raise TypeError(f"{name} must be np.float32 or np.float64; got {dtype!r}") from err
        if parsed not in _FLOATS:
            raise TypeError(f"{name} must be np.float32 or np.float64; got {parsed}")
        return parsed

    @staticmethod
    def _parse_smoother(smoother) -> dict:
        if not (isinstance(smoother, (tuple, list)) and len(smoother) == 2 and isinstance(smoother[1], dict)):
            raise TypeError("smoother must be a (name, kwargs) pair such as ('sor', {'omega': 1.15}); "
                            f"got {smoother!r}")
        name, kwargs = smoother
        if name not in _SMOOTHERS:
            raise ValueError(f"smoother must be one of {_SMOOTHERS}; got {name!r}")
        allowed = {"omega", "sweeps"} if name == "sor" else {"sweeps"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise ValueError(f"smoother {name!r} takes {sorted(allowed)}; got unknown {sorted(unknown)}")
        omega = float(kwargs.get("omega", 1.15 if name == "sor" else 1.0))
        sweeps = int(kwargs.get("sweeps", 2))
        if not 0 < omega < 2:
            raise ValueError(f"SOR omega must lie in (0, 2); got {omega}")
        if sweeps < 1:
            raise ValueError(f"smoother sweeps must be >= 1; got {sweeps}")
        return {"name": name, "omega": omega, "sweeps": sweeps}

    def _pick_device(self, device, backend) -> str:
        if backend not in ("auto", "numba", "torch"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'torch'; got {backend!r}")
        device = str(device)
        if device == "auto":
            device = "cpu"
            if backend != "numba" and _cuda_available():
                device = "cuda"
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}")
        if device.startswith("cuda") and backend == "numba":
            raise ValueError("the numba backend runs on the CPU only; use backend='torch' or 'auto' for CUDA")
        self.backend_name = "torch" if (backend == "torch" or device.startswith("cuda")) else "numba"
        return device

    def __repr__(self) -> str:
        lines = [f"PotentialSolver: {self.backend_name} on {self.device}, {self.dtype} "
                 f"({self.cycle_dtype} cycles), "
                 f"{self.cycle}-cycle, accel={self.accel}, smoother={self._smoother['name']}"
                 f"(omega={self._smoother['omega']}, sweeps={self._smoother['sweeps']}), "
                 f"coarse_scale={self.coarse_scale}, {self.components} component(s)",
                 f"Number of levels: {len(self.levels)}",
                 "  level   grid shape         unknowns",
                 "  -----   ----------------   ----------"]
        for number, level in enumerate(self.levels):
            shape = "x".join(str(n) for n in level.shape)
            lines.append(f"  {number:5d}   {shape:16s}   {level.unknowns:10d}")
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------------------
    def _allocate(self):
        backend, outer = self._backend, self._outer
        shape0 = self._work_shape
        self._work = {
            "x": outer.zeros(shape0), "b": outer.zeros(shape0),
            "r": outer.zeros(shape0), "z": outer.zeros(shape0), "p": outer.zeros(shape0),
            "q": outer.zeros(shape0), "labels": outer.component_labels(self._labels, self.components),
            # (x, b, r) per level in the cycle dtype; level 0 takes x and b from the caller (``_precondition``).
            "levels": [(None, None, backend.zeros(shape0))]
            + [(backend.zeros(level.shape), backend.zeros(level.shape), backend.zeros(level.shape))
               for level in self.levels[1:]],
        }
        if not self._same_dtypes:
            self._work["cycle"] = (backend.zeros(shape0), backend.zeros(shape0))

    def _precondition(self, r, z) -> None:
        """``z = M r``: one multigrid cycle from zero, run in the cycle dtype.

        On a GPU the cycle (a few hundred small kernels, more than the host launches in the time the GPU runs
        them) is captured once into a CUDA graph on these ``r`` and ``z`` and replayed.
        """
        if self._backend.graphs:
            captured = self._work.get("graph")
            if captured is None:
                graph = self._backend.capture(lambda: self._cycle_from_zero(r, z))
                captured = self._work["graph"] = (r, z, graph)
            if captured[0] is r and captured[1] is z and captured[2] is not None:
                captured[2].replay()
                return
        self._cycle_from_zero(r, z)

    def _cycle_from_zero(self, r, z) -> None:
        backend = self._backend
        if self._same_dtypes:
            backend.fill_zero(z)
            self._mg_cycle(0, z, r)
            return
        z_cycle, r_cycle = self._work["cycle"]
        backend.cast(0, r, r_cycle)
        backend.fill_zero(z_cycle)
        self._mg_cycle(0, z_cycle, r_cycle)
        backend.cast(0, z_cycle, z)

    def _mg_cycle(self, level: int, x, b, cycle: str | None = None) -> None:
        """One ``cycle`` (default the solver's) on ``level``: improves ``x`` (in place) for ``L x = b``.

        The coarse correction is one cycle of the same kind on the next level (V), two (W), or an F-cycle and
        then a V-cycle (F, as pyamg's ``cycle='F'``); one exact solve where the next level is the coarsest.
        """
        cycle = cycle or self.cycle
        backend = self._backend
        if level == len(self.levels) - 1:
            backend.coarse_solve(level, x, b)
            return
        omega, sweeps = self._smoother["omega"], self._smoother["sweeps"]
        for _ in range(sweeps):
            backend.sweep(level, x, b, omega, 0)
            backend.sweep(level, x, b, omega, 1)
        r = self._work["levels"][level][2]
        backend.residual(level, x, b, r, norm=False)  # the norm would cost the GPU a sync per level
        xc, bc, _ = self._work["levels"][level + 1]
        backend.restrict(level, r, bc)
        backend.fill_zero(xc)
        if level + 1 == len(self.levels) - 1 or cycle == "V":
            self._mg_cycle(level + 1, xc, bc, "V")
        else:
            self._mg_cycle(level + 1, xc, bc, cycle)
            self._mg_cycle(level + 1, xc, bc, "V" if cycle == "F" else "W")
        backend.prolong_add(level, xc, x)
        for _ in range(sweeps):
            backend.sweep(level, x, b, omega, 1)
            backend.sweep(level, x, b, omega, 0)

    def solve(self, dadt_faces, *, tol: float = 1e-6, maxiter: int = 100, x0=None, callback=None,
              residuals: list | None = None, cancel=None, out: np.ndarray | None = None) -> tuple:
        """Solve for the potential driven by ``dadt_faces``.

        Parameters
        ----------
        dadt_faces : tuple of ndarray
            ``(ax (I-1, J, K), ay (I, J-1, K), az (I, J, K-1))``: dA/dt along ``+d`` at the face midpoints, V/m.
        tol : float
            Stop when the iteration's residual satisfies ``||r|| <= tol ||b||`` (Euclidean norms on the
            conductive voxels).  CG updates ``r`` recursively; ``info["true_residual"]`` recomputes
            ``b - A psi`` from the result.  Both agree to rounding in float64; in float32 the true
            residual levels off between about 1e-7 and 1e-5, depending on the problem (rounding of the
            float32 operator; measured 1.2e-7 for a random right-hand side on a 64^3 sphere and 7e-6 for
            a figure-8 coil over a 3 mm three-shell sphere, both at ``tol=1e-6`` or below).
        maxiter : int
            Maximum number of CG iterations (or cycles when ``accel=None``).
        x0 : ndarray (I, J, K), optional
            Initial potential in V, of the solver dtype.  Used only if its residual is below ``||b||``
            (better than zero), else the solve starts from zero; ``info["warm_start"]`` tells which.
        callback : callable, optional
            ``callback(iteration, relative_residual)`` after each iteration (drive a progress bar).
        residuals : list, optional
            The relative residual history (starting with the initial one) is appended to it.
        cancel : callable, optional
            ``cancel() -> bool``, polled once per iteration.
        out : ndarray (I, J, K), optional
            C-contiguous array of the solver dtype that receives the potential (returned as ``psi``), e.g. the
            previous call's, instead of a new one: a fresh array of 256^3 float64 costs page faults, milliseconds
            a call.  It may be the ``x0`` of this call (read before it is written).

        Returns
        -------
        psi : ndarray (I, J, K)
            Potential in V of the solver dtype; zero mean on each connected component, 0 on air.
        info : dict
            ``iterations``, ``residual`` (final relative residual of the iteration), ``true_residual``
            (recomputed from ``psi``), ``converged`` (``residual <= tol``), ``residuals`` (history), ``time_setup_s``,
            ``time_solve_s``, ``device``, ``backend``, ``levels``, ``components``, ``fallbacks`` (messages
            for CUDA out-of-memory errors that moved the work to the CPU), ``warm_start`` (whether ``x0`` was
            used), ``time_phases_s`` (seconds of the call's steps: ``check`` of the inputs, ``rhs`` (on a GPU: the
            faces copied over, the sum taken there), ``iterate`` (with a warm start's check),
            ``finish`` (projection and true residual), ``pull`` (the potential back to the host), ``embed``
            (into the output array); a solve retried on the CPU after running out of GPU memory gives the retry's).

        Raises
        ------
        CondNetLogic.errors.Cancelled
            When ``cancel()`` returns true.
        TypeError, ValueError
            For bad face arrays (of the wrong shape, or with NaN/inf values between conductive voxels: the only
            faces read), ``x0`` or ``out`` of another dtype or shape (or a read-only or non-contiguous ``out``), or
            bad ``tol``/``maxiter``.

        Warns
        -----
        RuntimeWarning
            When ``tol`` is not reached in ``maxiter`` iterations; ``info["converged"]`` is then False.
        """
        start = time.perf_counter()
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1); got {tol}")
        if int(maxiter) < 1:
            raise ValueError(f"maxiter must be >= 1; got {maxiter}")
        history = residuals if residuals is not None else []
        first_entry = len(history)
        phases: dict = {}
        faces = _checked_faces(dadt_faces, self.shape)
        if x0 is not None:
            if not isinstance(x0, np.ndarray) or x0.dtype != self.dtype:
                raise TypeError(f"x0 must be a numpy array of the solver dtype {self.dtype}; "
                                f"got {getattr(x0, 'dtype', type(x0).__name__)}")
            if x0.shape != self.shape:
                raise ValueError(f"x0 must have shape {self.shape}; got {x0.shape}")
        if out is not None and (not isinstance(out, np.ndarray) or out.dtype != self.dtype or out.shape != self.shape
                                or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous {self.dtype} array of shape {self.shape}; got "
                             f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
        phases["check"] = time.perf_counter() - start
        arguments = (faces, x0, tol, int(maxiter), callback, history, cancel, phases)
        try:
            with _numba_threads_given_back(self._backend):
                iterations, relative, true_relative, x_work, warm = self._solve_on_backend(*arguments)
        except Exception as err:  # noqa: BLE001 - anything but a CUDA out-of-memory error is re-raised
            self._fall_back_if_out_of_memory(err, "running")
            del history[first_entry:]
            with _numba_threads_given_back(self._backend):  # the fallback runs on the numba backend
                iterations, relative, true_relative, x_work, warm = self._solve_on_backend(*arguments)
        embedding = time.perf_counter()
        psi = _embed(x_work, -self._lo, self.shape, self.dtype, out=out)
        phases["embed"] = time.perf_counter() - embedding
        converged = relative <= tol
        if not converged:
            warnings.warn(f"SPFD solve did not converge: relative residual {relative:.3g} > tol {tol:g} after "
                          f"{iterations} iterations", RuntimeWarning, stacklevel=2)
        info = {
            "iterations": iterations, "residual": relative, "true_residual": true_relative,
            "converged": converged, "residuals": list(history), "time_setup_s": self.time_setup_s,
            "time_solve_s": time.perf_counter() - start, "device": self.device, "backend": self.backend_name,
            "levels": len(self.levels), "components": self.components, "fallbacks": list(self.fallbacks),
            "warm_start": warm, "time_phases_s": phases,
        }
        logger.info("SPFD solve: %d iterations, relative residual %.3g, %.3f s on %s", iterations, relative,
                    info["time_solve_s"], self.device)
        return psi, info

    def electric_field(self, psi, dadt_faces, *, rotation=None, out=None, magnitude=None) -> tuple:
        """The induced field ``E = -grad psi - dA/dt`` (paper Eq. 5) and ``|E|`` per voxel, in V/m.

        The same field as :func:`~CondNetLogic.solver.spfd.electric_field` (the float64 reference), in one
        parallel pass that also rotates the components and takes the magnitude.

        Parameters
        ----------
        psi : ndarray (I, J, K)
            Potential in V on the solver's grid, as returned by :meth:`solve`.
        dadt_faces : tuple of ndarray
            The faces passed to :meth:`solve` (V/m).
        rotation : array (3, 3), optional
            Applied to the components along the voxel axes: ``E_out = rotation @ E_axes``.  Pass a volume's
            ``direction`` (columns: the RAS directions of the voxel axes) for RAS components; default identity.
        out : ndarray (I, J, K, 3), optional
            Written in full (0 on air); float32 or float64, any strides (a view into a larger volume works).
            Allocated as float32 when omitted.
        magnitude : ndarray (I, J, K), optional
            ``|E|``, likewise.

        Returns
        -------
        (out, magnitude)

        Raises
        ------
        TypeError, ValueError
            For arrays of the wrong shape or dtype, a read-only output, a bad rotation, or NaN/inf values in
            ``psi`` or on faces between conductive voxels (the only ones read; ``out`` and ``magnitude`` are then
            written all the same).
        """
        faces = _checked_faces(dadt_faces, self.shape)
        psi = np.asarray(psi)
        if psi.dtype not in _FLOATS:
            raise TypeError(f"psi must be float32 or float64 (V); got {psi.dtype}")
        if psi.shape != self.shape:
            raise ValueError(f"psi must have the solver's shape {self.shape}; got {psi.shape}")
        rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        if rotation.shape != (3, 3) or not np.all(np.isfinite(rotation)):
            raise ValueError(f"rotation must be a finite 3 x 3 matrix; got shape {rotation.shape}")
        if out is None:
            out = np.empty(self.shape + (3,), dtype=np.float32)
        if magnitude is None:
            magnitude = np.empty(self.shape, dtype=np.float32)
        for name, array, shape in (("out", out, self.shape + (3,)), ("magnitude", magnitude, self.shape)):
            if not isinstance(array, np.ndarray) or array.dtype not in _FLOATS or array.shape != shape:
                raise ValueError(f"{name} must be a float32/float64 array of shape {shape}; got "
                                 f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}")
            if not array.flags.writeable:
                raise ValueError(f"{name} is read-only")
        lo = [np.int64(v) for v in self._lo]
        bad = _kernels().voxel_field(psi, self.operator.w, *faces, *lo, self.spacing_m,
                                     np.ascontiguousarray(rotation), out, magnitude)
        if bad:
            raise ValueError(f"the field is not finite in {bad} voxels: psi or dadt_faces hold NaN/inf values "
                             "between conductive voxels")
        return out, magnitude

    def _solve_on_backend(self, faces, x0, tol, maxiter, callback, history, cancel, phases) -> tuple:
        """Right-hand side into the backend's ``b`` (on a GPU from the faces around the working grid, sent over),
        project it and take its norm, iterate, project the potential and check its residual, copy it back.

        Returns ``(iterations, relative residual, true relative residual, x, warm)``: ``x`` is the host mirror of
        the working potential (valid until the next solve), ``warm`` whether ``x0`` (on the input grid) was kept.
        On a GPU only the faces around the working grid (and ``x0``'s part) go over and ``x`` comes back, each
        through page-locked memory.  ``phases`` gets the seconds of ``rhs``, ``iterate``, ``finish`` and ``pull``.
        """
        outer = self._outer
        clock = [time.perf_counter()]

        def lap(name: str) -> None:
            now = time.perf_counter()
            phases[name], clock[0] = now - clock[0], now

        if self._work is None:
            self._allocate()
        x, b = self._work["x"], self._work["b"]
        outer.rhs(faces, self._lo, self.spacing_m, b)
        outer.project_components(b, self._work["labels"])
        b_norm = float(np.sqrt(outer.dot(b, b)))
        if not np.isfinite(b_norm):  # a NaN/inf face value read spreads through its conductor's mean
            raise ValueError("dadt_faces hold NaN/inf values on faces between conductive voxels")
        lap("rhs")
        if b_norm == 0.0:
            history.append(0.0)
            x_host = outer.host_mirror(x)
            x_host.fill(0)
            return 0, 0.0, 0.0, x_host, False
        r_squared = None  # |b - L x|^2 of the start, where it is known
        if x0 is not None:
            _embed(x0, self._lo, self._work_shape, self.dtype, out=outer.host_mirror(x))
            outer.push(x)
            # 0 on air and zero mean per conductor, like the solution; the operator does not see either change.
            outer.project_components(x, self._work["labels"])
            r_squared = outer.residual(0, x, b, self._work["r"])
            if r_squared >= b_norm**2:  # a worse start than zero is dropped
                r_squared = None
        warm = r_squared is not None
        if not warm:
            outer.fill_zero(x)
        iterations, relative = self._iterate(x, b, b_norm, tol, maxiter, callback, history, cancel, r_squared)
        lap("iterate")
        outer.project_components(x, self._work["labels"])
        # ||b - L psi|| / ||b|| recomputed in the solver dtype (in float32 the rounding of psi itself limits it
        # to about 1e-6 for head models).
        true_relative = float(np.sqrt(outer.residual(0, x, b, self._work["r"]))) / b_norm
        lap("finish")
        outer.pull(x)
        lap("pull")
        return iterations, relative, true_relative, outer.host_mirror(x), warm

    def _iterate(self, x, b, b_norm, tol, maxiter, callback, history, cancel, r_squared=None) -> tuple:
        """Multigrid-preconditioned flexible CG (or stand-alone cycles) on ``x`` in place.

        ``r_squared``: ``|b - L x|^2`` when the work array ``r`` already holds that residual (a kept warm start),
        else None (it is computed here).

        CG uses the Polak-Ribiere form ``beta = z_new . (r_new - r_old) / (z_old . r_old)``
        ``= -alpha (z_new . q) / (z_old . r_old)`` (Notay 2000), which stays convergent when the
        preconditioner is not exactly symmetric (float32 cycles); for an exactly symmetric one it equals the
        classical ``r_new . z_new / r_old . z_old``.
        """
        outer = self._outer
        work = self._work
        r, z = work["r"], work["z"]
        relative = float(np.sqrt(outer.residual(0, x, b, r) if r_squared is None else r_squared)) / b_norm
        history.append(relative)
        iterations = 0
        if relative <= tol:
            return iterations, relative
        if self.accel is None:
            while iterations < maxiter:
                self._check_cancel(cancel)
                self._precondition(r, z)
                outer.cg_direction(x, z, 1.0)  # x <- z + x
                relative = float(np.sqrt(outer.residual(0, x, b, r))) / b_norm
                iterations += 1
                history.append(relative)
                if callback is not None:
                    callback(iterations, relative)
                if relative <= tol:
                    break
            return iterations, relative
        p, q = work["p"], work["q"]
        self._precondition(r, z)
        rz = outer.dot(r, z)
        outer.cg_direction(p, z, 0.0)
        while iterations < maxiter:
            self._check_cancel(cancel)
            pq = outer.apply(0, p, q)
            if pq <= 0 or rz <= 0:
                break
            alpha = rz / pq
            rr = outer.cg_update(x, r, p, q, alpha)
            relative = float(np.sqrt(rr)) / b_norm
            iterations += 1
            history.append(relative)
            if callback is not None:
                callback(iterations, relative)
            if relative <= tol:
                break
            self._precondition(r, z)
            rz_new, qz = outer.dot_pair(r, z, q)
            outer.cg_direction(p, z, -alpha * qz / rz)
            rz = rz_new
        return iterations, relative

    @staticmethod
    def _check_cancel(cancel) -> None:
        if cancel is not None and cancel():
            raise Cancelled("SPFD solve cancelled")


def solve_potential(sigma, dadt_faces, spacing_m: float, *, tol: float = 1e-6, maxiter: int = 100,
                    device="cpu", dtype=np.float64, callback=None, residuals: list | None = None,
                    cancel=None) -> tuple:
    """Solve paper Eq. 4 for the scalar potential once: ``PotentialSolver(...).solve(...)``.

    Parameters
    ----------
    sigma : ndarray (I, J, K)
        Conductivity in S/m, 0 for air.
    dadt_faces : tuple of ndarray
        ``(ax (I-1, J, K), ay (I, J-1, K), az (I, J, K-1))``: dA/dt along ``+d`` at face midpoints, V/m.
    spacing_m : float
        Voxel size in metres.
    tol, maxiter, callback, residuals, cancel
        See :meth:`PotentialSolver.solve`.
    device : {"cpu", "cuda", "auto"}
        Where to solve.
    dtype : np.float64 or np.float32
        Working precision.

    Returns
    -------
    psi : ndarray (I, J, K)
        Potential in V (zero mean per connected component, 0 on air).
    info : dict
        See :meth:`PotentialSolver.solve`.
    """
    solver = PotentialSolver(sigma, spacing_m, device=device, dtype=dtype)
    return solver.solve(dadt_faces, tol=tol, maxiter=maxiter, callback=callback, residuals=residuals,
                        cancel=cancel)
