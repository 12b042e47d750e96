"""Torch implementation of the multigrid primitives (CUDA, or the CPU for tests).

The same cycle and CG loop as the numba backend (:class:`CondNetLogic.solver.multigrid.PotentialSolver`) run
on dense tensors: a red-black half-sweep computes the residual of the whole interior from shifted slices and
adds it back scaled by ``omega / d`` on that colour (0 on the other), restriction is a reshape-sum over
2 x 2 x 2 blocks, prolongation a broadcast.  The arithmetic is that of the numba kernels, rearranged, so both
backends agree to the rounding of the working dtype.  ``compile=True`` wraps the per-level updates and the
operator product in ``torch.compile`` (fuses the slice arithmetic into one kernel on CUDA); it is off by default
because compilation takes tens of seconds and needs a C++ toolchain on the CPU.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

__all__ = ["TorchBackend"]

logger = logging.getLogger(__name__)

_INTERIOR = (slice(1, -1),) * 3


def _add_neighbour_sum(start, x, wxm, wxp, wym, wyp, wzm, wzp, value: float = 1.0, differences: bool = False):
    """``start += value * sum_f w_f x_q`` over the six neighbours of every interior cell (``start``: a new tensor
    of the interior's shape, returned): one kernel a face in eager mode, where a sum of products launches eleven,
    each with its own temporary.

    ``differences``: ``sum_f w_f (x_q - x_p)`` instead, as the numba kernels take it.  In float32 it keeps the
    digits that ``sum_f w_f x_q - d x`` cancels where ``x`` is smooth (all-float32 CG stalled near a relative
    residual of 4e-4 at 256^3 with that form), for twice the eager kernels.
    """
    neighbours = (x[:-2, 1:-1, 1:-1], x[2:, 1:-1, 1:-1], x[1:-1, :-2, 1:-1], x[1:-1, 2:, 1:-1], x[1:-1, 1:-1, :-2],
                  x[1:-1, 1:-1, 2:])
    if differences:
        neighbours = tuple(q - x[_INTERIOR] for q in neighbours)
    for w, q in zip((wxm, wxp, wym, wyp, wzm, wzp), neighbours):
        start.addcmul_(w, q, value=value)
    return start


def _interior_residual(x, b, wxm, wxp, wym, wyp, wzm, wzp, d):
    """Interior of ``b - L x = b - d x + sum_f w_f x_q`` (a new tensor)."""
    return _add_neighbour_sum(torch.addcmul(b[_INTERIOR], d, x[_INTERIOR], value=-1.0), x, wxm, wxp, wym, wyp, wzm,
                              wzp)


def _apply_interior(x, wxm, wxp, wym, wyp, wzm, wzp, d):
    """Interior of ``L x = d x - sum_f w_f x_q`` (a new tensor)."""
    return _add_neighbour_sum(d * x[_INTERIOR], x, wxm, wxp, wym, wyp, wzm, wzp, value=-1.0)


def _interior_residual_of_differences(x, b, wxm, wxp, wym, wyp, wzm, wzp, d):
    """:func:`_interior_residual` from neighbour differences (``d`` unused: the same signature)."""
    return _add_neighbour_sum(b[_INTERIOR].clone(), x, wxm, wxp, wym, wyp, wzm, wzp, differences=True)


def _apply_interior_of_differences(x, wxm, wxp, wym, wyp, wzm, wzp, d):
    """:func:`_apply_interior` from neighbour differences (``d`` unused: the same signature)."""
    return _add_neighbour_sum(torch.zeros_like(d), x, wxm, wxp, wym, wyp, wzm, wzp, value=-1.0, differences=True)


def _divergence_interior(ax, ay, az, wxm, wxp, wym, wyp, wzm, wzp, scale: float):
    """Interior of the right-hand side ``scale * sum_f s_f w_f a_f`` (a new tensor), the terms in the numba
    kernel's order; ``ax``, ``ay``, ``az`` hold the faces' values on the working grid (``a_d[p]`` on the face
    between cells ``p`` and ``p + e_d``), 0 where the face does not conduct."""
    s = wxp * ax[_INTERIOR]
    s.addcmul_(wxm, ax[:-2, 1:-1, 1:-1], value=-1.0).addcmul_(wyp, ay[_INTERIOR])
    s.addcmul_(wym, ay[1:-1, :-2, 1:-1], value=-1.0).addcmul_(wzp, az[_INTERIOR])
    return s.addcmul_(wzm, az[1:-1, 1:-1, :-2], value=-1.0).mul_(scale)


def _sor_update(x, b, wxm, wxp, wym, wyp, wzm, wzp, d, coefficient) -> None:
    """Red-black SOR half-sweep in place: ``x_p += c_p (b_p + sum_f w_f x_q - d_p x_p)`` with ``c = omega / d`` on
    the cells of one colour and 0 elsewhere (``_TorchLevel.coefficient``), which is
    ``(1 - omega) x_p + omega (b_p + sum_f w_f x_q) / d_p`` there.  Cells of that colour read only the other
    colour, so updating after the whole residual is computed is the Gauss-Seidel order."""
    x[_INTERIOR].addcmul_(coefficient, _interior_residual(x, b, wxm, wxp, wym, wyp, wzm, wzp, d))


class _TorchLevel:
    """Face conductances of one level as interior-aligned views plus the red/black relaxation coefficients."""

    def __init__(self, w: np.ndarray, device, dtype):
        w = torch.as_tensor(w, device=device, dtype=dtype)
        #: Face conductances ``(3, n0, n1, n2)``; ``faces`` are views into it.
        self.w = w
        self.shape = tuple(w.shape[1:])
        self.faces = (w[0, :-2, 1:-1, 1:-1], w[0, 1:-1, 1:-1, 1:-1], w[1, 1:-1, :-2, 1:-1],
                      w[1, 1:-1, 1:-1, 1:-1], w[2, 1:-1, 1:-1, :-2], w[2, 1:-1, 1:-1, 1:-1])
        self.d = sum(self.faces)
        self._coefficients: dict = {}

    def coefficient(self, color: int, omega: float):
        """``omega / d`` on the conductive interior cells with ``(i + j + k) % 2 == color``, 0 elsewhere (kept)."""
        key = (color, omega)
        if key not in self._coefficients:
            n0, n1, n2 = self.d.shape
            device = self.d.device
            parity = (torch.arange(1, n0 + 1, device=device).view(-1, 1, 1)
                      + torch.arange(1, n1 + 1, device=device).view(1, -1, 1)
                      + torch.arange(1, n2 + 1, device=device).view(1, 1, -1)) % 2
            on = (self.d > 0) & (parity == color)
            self._coefficients[key] = torch.where(on, omega / torch.where(on, self.d, 1.0), 0.0).to(self.d.dtype)
        return self._coefficients[key]


class TorchBackend:
    """Multigrid primitives on torch tensors; same interface as ``multigrid.NumbaBackend``.

    Parameters
    ----------
    levels : list of multigrid.Level
        The hierarchy built on the host (face conductances as numpy arrays).
    dtype : np.dtype
        float32 or float64.
    cells, pinv : ndarray, optional
        Coarsest-level unknowns (flat indices) and the pseudo-inverse (float64), see
        ``multigrid.coarse_pseudo_inverse``; omitted for a backend that only applies the operator.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    compile : bool
        Wrap the level updates in ``torch.compile``.
    differences : bool
        Residuals and operator products from neighbour differences (``_add_neighbour_sum``), for a float32 backend
        that runs CG; the smoother keeps the cheaper form, whose rounding its ``omega / d`` scales down.
    """

    name = "torch"

    def __init__(self, levels: list, dtype, cells: np.ndarray | None, pinv: np.ndarray | None, device: str, *,
                 compile: bool = False, differences: bool = False):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch {torch.__version__} sees no CUDA device")
        self.dtype = np.dtype(dtype)
        self.torch_dtype = torch.float32 if self.dtype == np.float32 else torch.float64
        self.levels = [_TorchLevel(level.w, self.device, self.torch_dtype) for level in levels]
        self.cells = None if cells is None else torch.as_tensor(cells, device=self.device, dtype=torch.int64)
        self.pinv = None if pinv is None else torch.as_tensor(pinv, device=self.device, dtype=torch.float64)
        residual, apply = ((_interior_residual_of_differences, _apply_interior_of_differences) if differences
                           else (_interior_residual, _apply_interior))
        self._sor = torch.compile(_sor_update, dynamic=True) if compile else _sor_update
        self._residual = torch.compile(residual, dynamic=True) if compile else residual
        self._apply = torch.compile(apply, dynamic=True) if compile else apply
        self._divergence = torch.compile(_divergence_interior, dynamic=True) if compile else _divergence_interior
        #: Level 0's face values of dA/dt by (axis, dtype), and where its faces do not conduct (:meth:`rhs`).
        self._faces: dict = {}
        self._insulating = None
        #: Host buffers of device tensors (:meth:`host_mirror`); None where the tensors live on the host.
        self._mirrors: dict | None = {} if self.device.type == "cuda" else None
        #: Whether the solver replays its cycles from CUDA graphs (:meth:`capture`): on CUDA devices.
        self.graphs = self.device.type == "cuda"

    def capture(self, run):
        """A CUDA graph of ``run()``, which must work on fixed tensors without host synchronisation; None (with a
        warning) when the capture fails.  ``run`` is called once first, on a side stream, so that lazily created
        state (cuBLAS workspaces, compiled kernels) exists before the capture."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                run()
        except RuntimeError as err:
            logger.warning("CUDA graph capture of the multigrid cycle failed (%s): cycles run eagerly (slower)", err)
            return None
        return graph

    def host_mirror(self, tensor) -> np.ndarray:
        """The host array that :meth:`push` copies into ``tensor`` and :meth:`pull` fills from it.

        On the CPU it is the tensor's own memory.  On CUDA it is a page-locked buffer kept for the tensor, so the
        copies run at the bus's full speed (and ``push`` asynchronously); it is valid until the next ``pull``.
        """
        return tensor.numpy() if self._mirrors is None else self._mirror(tensor).numpy()

    def _mirror(self, tensor):
        mirror = self._mirrors.get(tensor.data_ptr())
        if mirror is None or mirror.shape != tensor.shape or mirror.dtype != tensor.dtype:
            mirror = torch.zeros(tensor.shape, dtype=tensor.dtype, pin_memory=self.device.type == "cuda")
            self._mirrors[tensor.data_ptr()] = mirror
        return mirror

    def push(self, tensor) -> None:
        """``tensor = host_mirror(tensor)`` (queued on the current stream on CUDA)."""
        if self._mirrors is not None:
            tensor.copy_(self._mirror(tensor), non_blocking=True)

    def pull(self, tensor) -> None:
        """``host_mirror(tensor) = tensor`` (waits for the device)."""
        if self._mirrors is not None:
            self._mirror(tensor).copy_(tensor)

    def rhs(self, faces, lo, scale: float, b) -> None:
        """``b`` = the right-hand side on level 0 from the input's face arrays (V/m; working cell ``p`` is input
        voxel ``p + lo``), as ``multigrid.divergence`` computes it on the host.  The faces are float32 or float64,
        as ``spfd.validate_dadt_faces`` returns them.

        Each array's part around the working grid is copied in parallel into its host mirror and sent over
        (on a GPU less data than the host's sum reading the float64 conductances); the device zeroes the faces
        that do not conduct (never read: a NaN there is harmless) and takes the sum.
        """
        from .multigrid import _embed

        level = self.levels[0]
        if self._insulating is None:
            self._insulating = level.w <= 0
        values = []
        for axis, face in enumerate(faces):
            key = (axis, face.dtype)
            tensor = self._faces.get(key)
            if tensor is None:
                dtype = torch.float32 if face.dtype == np.float32 else torch.float64
                tensor = self._faces[key] = torch.zeros(level.shape, device=self.device, dtype=dtype)
            _embed(face, lo, level.shape, face.dtype, out=self.host_mirror(tensor))
            self.push(tensor)
            values.append(tensor.masked_fill_(self._insulating[axis], 0))
        b[_INTERIOR] = self._divergence(*values, *level.faces, float(scale))

    def component_labels(self, labels: np.ndarray, count: int) -> tuple:
        """The argument of :meth:`project_components`: flat labels ``0 .. count`` on the device, and the number of
        cells of each (at least 1)."""
        flat = torch.as_tensor(np.ascontiguousarray(labels).reshape(-1), device=self.device).long()
        return flat, torch.bincount(flat, minlength=count + 1).to(torch.float64).clamp_(min=1)

    @staticmethod
    def project_components(x, labels) -> None:
        """Zero mean on each connected component (label >= 1), 0 on air (label 0); in place, sums in float64."""
        flat_labels, sizes = labels
        flat = x.view(-1)
        means = (torch.bincount(flat_labels, weights=flat.to(torch.float64), minlength=sizes.numel()) / sizes)
        flat.sub_(means.to(x.dtype)[flat_labels])
        flat.masked_fill_(flat_labels == 0, 0)

    def zeros(self, shape):
        return torch.zeros(shape, device=self.device, dtype=self.torch_dtype)

    def from_numpy(self, array):
        return torch.as_tensor(np.ascontiguousarray(array, dtype=self.dtype), device=self.device).clone()

    @staticmethod
    def to_numpy(tensor):
        return tensor.cpu().numpy()

    @staticmethod
    def fill_zero(tensor):
        tensor.zero_()

    def sweep(self, level, x, b, omega, color):
        lv = self.levels[level]
        self._sor(x, b, *lv.faces, lv.d, lv.coefficient(int(color), float(omega)))

    def residual(self, level, x, b, r, norm: bool = True):
        """``r = b - A x`` on ``level``; returns ``|r|^2``, or None without ``norm`` (no device sync)."""
        lv = self.levels[level]
        r[_INTERIOR] = self._residual(x, b, *lv.faces, lv.d)
        return float(torch.sum(r * r, dtype=torch.float64)) if norm else None

    def apply(self, level, x, y):
        lv = self.levels[level]
        y[_INTERIOR] = self._apply(x, *lv.faces, lv.d)
        return self.dot(x, y)

    @staticmethod
    def restrict(level, rf, rc):
        m0, m1, m2 = (n - 2 for n in rc.shape)
        block = rf[_INTERIOR]
        if block.shape != (2 * m0, 2 * m1, 2 * m2):
            # An odd interior: the last coarse cell has one child along that axis; pad with zeros.
            block = torch.nn.functional.pad(block, (0, 2 * m2 - block.shape[2], 0, 2 * m1 - block.shape[1],
                                                    0, 2 * m0 - block.shape[0]))
        rc[_INTERIOR] = block.reshape(m0, 2, m1, 2, m2, 2).sum(dim=(1, 3, 5))

    @staticmethod
    def prolong_add(level, ec, xf):
        n0, n1, n2 = (n - 2 for n in xf.shape)
        m0, m1, m2 = (n - 2 for n in ec.shape)
        fine = ec[_INTERIOR].reshape(m0, 1, m1, 1, m2, 1).expand(m0, 2, m1, 2, m2, 2)
        xf[_INTERIOR] += fine.reshape(2 * m0, 2 * m1, 2 * m2)[:n0, :n1, :n2]

    def coarse_solve(self, level, x, b):
        lv = self.levels[level]
        r = _interior_residual(x, b, *lv.faces, lv.d)
        full = torch.zeros_like(x)
        full[_INTERIOR] = r
        correction = self.pinv @ full.reshape(-1)[self.cells].to(torch.float64)
        x.view(-1).index_add_(0, self.cells, correction.to(self.torch_dtype))

    @staticmethod
    def _dot(a, b):
        """``a . b`` accumulated in float64, as a 0-d tensor: one BLAS kernel for float64 grids (no product
        array), else the float32 product summed in float64."""
        if a.dtype == b.dtype == torch.float64:
            return torch.dot(a.view(-1), b.view(-1))
        return torch.sum(a * b, dtype=torch.float64)

    def dot(self, a, b):
        return float(self._dot(a, b))

    def dot_pair(self, a, b, c):
        """``(a . b, c . b)`` (one device synchronisation)."""
        first, second = torch.stack((self._dot(a, b), self._dot(c, b))).tolist()
        return first, second

    @staticmethod
    def cast(level, source, target):
        """``target = source`` in the dtype of ``target``, over the whole grid.

        The numba backend copies only the conductive spans; the cells outside them differ, but no face
        couples them to the unknowns and the solver zeroes them in the result.
        """
        target.copy_(source)

    def cg_update(self, x, r, p, q, alpha):
        x.add_(p, alpha=alpha)
        r.sub_(q, alpha=alpha)
        return self.dot(r, r)

    @staticmethod
    def cg_direction(p, z, beta):
        torch.add(z, p, alpha=beta, out=p)  # p = z + beta p in one kernel
