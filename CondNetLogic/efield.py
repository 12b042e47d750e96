"""TMS E-field on a conductivity volume: coil primary field + SPFD potential solve (paper Eqs. 4-5).

:class:`EFieldSimulation` validates the conductivity once, crops it to the head and builds the solver
once; :meth:`EFieldSimulation.solve` then runs one coil position (the Slicer module calls it on each coil
move; the ``condnet efield`` command once).  Results are on the input volume's exact grid, whatever its
orientation (L-I-A, L-A-S, R-A-S, oblique): the solver works along the voxel axes and the field is
rotated to RAS components with the volume's direction matrix.

Units: conductivity S/m, ``dI/dt`` A/s, E-field V/m; positions and poses in RAS mm (converted to metres
in :mod:`CondNetLogic.primary_field`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .coil import Coil, check_coil_to_ras
from .errors import Cancelled
from .primary_field import MM_TO_M, PrimaryFieldGrid, cached_grid, cached_grid_path, dadt_faces
from .volume import Volume

__all__ = [
    "PRIMARY_FIELD_MODES",
    "EFieldResult",
    "EFieldSimulation",
    "check_wire_outside",
    "ensemble_spread",
    "ensemble_statistics",
    "search_poses",
    "strongest_pose",
    "validate_conductivity",
]

logger = logging.getLogger(__name__)

#: ``"direct"``: exact closed form at every face; ``"grid"``: resample a precomputed coil-frame grid
#: (:class:`~CondNetLogic.primary_field.PrimaryFieldGrid`); ``"auto"``: the grid when it is at hand (built by this
#: simulation, given, or in the grid cache) or when building it costs fewer direct evaluations than the earlier
#: direct solves and the coming ones would (:meth:`EFieldSimulation.grid_pays_off`), else direct.
PRIMARY_FIELD_MODES = ("auto", "direct", "grid")

#: Wires closer than this to a conducting face midpoint are rejected (mm).
MIN_WIRE_DISTANCE_MM = 1.0


def check_wire_outside(coil: Coil, coil_to_ras: np.ndarray, conducting: Volume) -> None:
    """Raise ``ValueError`` if a coil wire or dipole lies in a conducting voxel (wires sampled every quarter voxel).

    A sampled A-field coil (NIfTI file) has no wires: its centre, the coil-frame origin, is checked instead.

    Parameters
    ----------
    coil : Coil
    coil_to_ras : array (4, 4)
        Coil pose, mm.
    conducting : Volume of bool (I, J, K)
        True where the conductivity is > 0 (isotropic voxels).

    Notes
    -----
    A cheap test, run before any solver is built.  :func:`~CondNetLogic.primary_field.dadt_faces` then also
    rejects wires and dipoles within ``MIN_WIRE_DISTANCE_MM`` of a conducting face midpoint.
    """
    if coil.sampled is not None:
        _raise_if_conducting(np.asarray(coil_to_ras, dtype=float)[None, :3, 3], conducting, "the coil centre lies in")
        return
    segments = coil.segments_ras_mm(coil_to_ras)
    step_mm = 0.25 * float(conducting.spacing[0])
    lengths = np.linalg.norm(segments[:, 1] - segments[:, 0], axis=1)
    counts = np.maximum(np.ceil(lengths / step_mm).astype(np.int64), 1)
    fractions = np.concatenate([np.arange(n + 1) / n for n in counts] + [np.zeros(0)])
    starts = np.repeat(segments[:, 0], counts + 1, axis=0)
    ends = np.repeat(segments[:, 1], counts + 1, axis=0)
    points = np.concatenate([starts + fractions[:, None] * (ends - starts), coil.dipoles_ras(coil_to_ras)[0]])
    _raise_if_conducting(points, conducting, "the coil passes through")


def _raise_if_conducting(points: np.ndarray, conducting: Volume, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first of ``points`` (N, 3; RAS mm) in a conducting voxel."""
    ijk = np.rint(conducting.ras_to_ijk_points(points)).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.array(conducting.shape)), axis=1)
    hits = inside.copy()
    hits[inside] = conducting.array[tuple(ijk[inside].T)]
    if np.any(hits):
        where = points[np.argmax(hits)]
        raise ValueError(
            f"{what} the head (conductivity > 0) at RAS ({where[0]:.1f}, {where[1]:.1f}, "
            f"{where[2]:.1f}) mm: place the coil outside the scalp (check the normal points into the head "
            "and the scalp offset)"
        )


@dataclass
class EFieldResult:
    """One E-field simulation on the conductivity's grid.

    Attributes
    ----------
    e_vector : Volume (I, J, K, 3) float32
        Induced E-field in V/m, components along R, A, S; 0 outside the conductor.
    e_magnitude : Volume (I, J, K) float32
        ``|E|`` in V/m.
    info : dict
        ``iterations``, ``residual``, ``true_residual``, ``converged``, ``device``, ``fallbacks`` (CUDA
        out-of-memory messages; the solve then ran on the CPU), ``tol``, ``didt``
        (A/s), ``coil_name``, ``coil_sha256``, ``coil_to_ras`` (nested list, mm), ``primary_field``
        (mode used: ``direct``, ``grid``, or ``sampled`` for a NIfTI coil) and ``timings`` (seconds:
        ``primary_field``, ``solve``, ``total``).
    """

    e_vector: Volume
    e_magnitude: Volume
    info: dict = field(default_factory=dict)


def validate_conductivity(conductivity: Volume) -> np.ndarray:
    """Check a conductivity volume for the solver; returns its values as float64 (S/m).

    Raises
    ------
    TypeError
        If it is not a :class:`Volume` of real numbers.
    ValueError
        If it is not 3D scalar, holds NaN/inf or negative values, has anisotropic or sheared voxels, or no
        voxel conducts.
    """
    if not isinstance(conductivity, Volume):
        raise TypeError(f"conductivity must be a Volume; got {type(conductivity).__name__}")
    sigma = conductivity.array
    if sigma.ndim != 3:
        raise ValueError(f"conductivity must be a scalar 3D volume (I, J, K); got shape {sigma.shape}")
    if sigma.dtype.kind not in "biuf":
        raise TypeError(f"conductivity must be a real numeric array in S/m; got dtype {sigma.dtype}")
    sigma = sigma.astype(np.float64, copy=False)
    if not np.all(np.isfinite(sigma)):
        bad = int(np.count_nonzero(~np.isfinite(sigma)))
        raise ValueError(f"conductivity holds {bad} NaN or infinite voxels; expected finite values in S/m")
    if sigma.min() < 0:
        bad = int(np.count_nonzero(sigma < 0))
        raise ValueError(
            f"conductivity must be >= 0 S/m (0 = air); {bad} voxels are negative, minimum {float(sigma.min()):.4g}"
        )
    if not conductivity.is_isotropic:
        spacing = ", ".join(f"{s:.4g}" for s in conductivity.spacing)
        raise ValueError(
            f"the E-field solver needs isotropic voxels; the conductivity has spacing ({spacing}) mm: "
            "resample it to an isotropic grid first (e.g. `condnet resample --input sigma.nii.gz --out "
            "sigma_1mm.nii.gz --spacing 1`)"
        )
    direction = conductivity.direction
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-4:
        raise ValueError("the conductivity's voxel axes are not orthogonal (sheared affine); resample it first")
    if not np.any(sigma > 0):
        raise ValueError("the conductivity is 0 everywhere: no head (conductor) to simulate")
    return sigma


class EFieldSimulation:
    """E-field simulations on one conductivity volume; the solver is built once for all coil positions.

    Parameters
    ----------
    conductivity : Volume (I, J, K)
        Conductivity in S/m (0 = air), isotropic voxels, any orientation.
    device : {"auto", "cpu", "cuda"}
        Where the potential is solved.
    tol : float
        Relative residual at which the solve stops.
    dtype : np.float32 or np.float64
        Solver precision (float32 halves memory and is faster on GPUs).
    primary_field : {"auto", "direct", "grid"}
        How ``dA/dt`` is evaluated (see :data:`PRIMARY_FIELD_MODES`).
    grid_spacing_mm : float
        Spacing of the coil-frame grid when one is built here.
    grid : PrimaryFieldGrid, optional
        A grid built beforehand (it depends on the coil only, so one grid serves every head); it is used
        for its coil in the ``"grid"`` and ``"auto"`` modes.
    grid_cache_dir : path-like, optional
        Folder where grids are kept between sessions (:func:`~CondNetLogic.primary_field.cached_grid`;
        the CLI and the Slicer module pass :func:`~CondNetLogic.primary_field.default_cache_dir`).  Without
        it a needed grid is built in memory only.
    maxiter : int
        Maximum solver iterations.
    warm_start : bool
        Start each solve from the previous solve's potential (scaled by the ratio of the dI/dt values) instead
        of zero; may be changed between solves.  For a coil moved 2-10 mm it saves 2-3 of 10 iterations
        (256^3 head, ``benchmarks/RESULTS.md``); results then depend on the previous pose within the solver
        tolerance, so it is off by default and on for interactive coil dragging.
    compile : bool
        Compile the GPU solver's multigrid kernels with ``torch.compile`` (CUDA only): a one-off compilation of
        about 10 s, then 256^3 solves whose CG loop takes 34 ms instead of 75 ms on an H100
        (``benchmarks/RESULTS.md``).
    progress : callable, optional
        ``progress(fraction, message)`` during setup.
    cancel : callable, optional
        ``cancel() -> bool``, asked between the setup's stages.

    Attributes
    ----------
    solver : PotentialSolver
        Built once on the head's bounding box (plus one voxel) and reused by every :meth:`solve`.
    device : str
        Where the solver runs.

    Raises
    ------
    TypeError
        If ``conductivity`` is not a Volume or not numeric.
    ValueError
        If it is not 3D, holds NaN/inf or negative values, has anisotropic or sheared voxels, or has no
        conducting voxel; or an option is out of range.
    Cancelled
        When ``cancel()`` returns true during the setup.
    """

    def __init__(
        self,
        conductivity: Volume,
        *,
        device: str = "auto",
        tol: float = 1e-6,
        dtype=np.float64,
        primary_field: str = "auto",
        grid_spacing_mm: float = 2.0,
        grid: Optional[PrimaryFieldGrid] = None,
        grid_cache_dir: Optional[Union[str, os.PathLike]] = None,
        maxiter: int = 200,
        warm_start: bool = False,
        compile: bool = False,
        progress: Optional[Callable[[float, str], None]] = None,
        cancel: Optional[Callable[[], bool]] = None,
    ) -> None:
        from .solver import PotentialSolver

        start = time.perf_counter()
        sigma = validate_conductivity(conductivity)
        if primary_field not in PRIMARY_FIELD_MODES:
            raise ValueError(f"primary_field must be one of {PRIMARY_FIELD_MODES}; got {primary_field!r}")
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1); got {tol}")
        self.conductivity = conductivity
        self.tol = float(tol)
        self.maxiter = int(maxiter)
        self.warm_start = bool(warm_start)
        self._potential: Optional[np.ndarray] = None  # the last solve's potential array, reused by the next
        self._previous_didt: Optional[float] = None  # its dI/dt when it may start the next solve (warm_start)
        self.primary_field = primary_field
        self.grid_spacing_mm = float(grid_spacing_mm)
        self.grid_cache_dir = None if grid_cache_dir is None else Path(grid_cache_dir)
        self._grids: dict = {}
        self._n_faces: Optional[int] = None
        self._direct_faces: dict = {}  # coil sha256 -> faces its direct solves here have evaluated so far
        if grid is not None:
            if not isinstance(grid, PrimaryFieldGrid):
                raise TypeError(f"grid must be a PrimaryFieldGrid; got {type(grid).__name__}")
            self._grids[grid.coil_sha256] = grid
        self._progress = progress
        conducting = sigma > 0
        index = np.nonzero(conducting)
        lo = np.maximum(np.array([i.min() for i in index]) - 1, 0)
        hi = np.minimum(np.array([i.max() for i in index]) + 2, np.array(sigma.shape))
        self._crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        translate = np.eye(4)
        translate[:3, 3] = lo
        self._sigma = np.ascontiguousarray(sigma[self._crop])
        self._mask = self._sigma > 0
        self._geometry = Volume(np.zeros(self._sigma.shape, dtype=np.uint8), conductivity.ijk_to_ras @ translate)
        self.spacing_m = float(conductivity.spacing[0]) * MM_TO_M
        if progress is not None:
            progress(0.0, f"building the solver for {int(conducting.sum())} conducting voxels")
        stages = None if progress is None else lambda fraction, message: progress(fraction, f"solver: {message}")
        self.solver = PotentialSolver(self._sigma, self.spacing_m, device=device, dtype=dtype, compile=compile,
                                      progress=stages, cancel=cancel)
        self.device = self.solver.device
        self.time_setup_s = time.perf_counter() - start
        if progress is not None:
            progress(1.0, "solver ready")
        logger.info(
            "EFieldSimulation: cropped %s -> %s, %s, setup %.2f s",
            sigma.shape,
            self._sigma.shape,
            self.device,
            self.time_setup_s,
        )

    @property
    def n_faces(self) -> int:
        """Number of voxel faces between two conducting voxels (where ``dA/dt`` is needed)."""
        if self._n_faces is None:
            m = self._mask
            pairs = ((m[1:], m[:-1]), (m[:, 1:], m[:, :-1]), (m[:, :, 1:], m[:, :, :-1]))
            self._n_faces = int(sum(np.count_nonzero(high & low) for high, low in pairs))
        return self._n_faces

    def grid_pays_off(self, coil: Coil, solves: int = 1) -> bool:
        """Whether the ``"auto"`` mode resamples a coil-frame grid for ``coil`` rather than evaluating directly.

        True when the grid is at hand (built or given here, or kept in ``grid_cache_dir`` by
        :func:`~CondNetLogic.primary_field.cached_grid`), or when its build evaluates fewer points
        (:meth:`~CondNetLogic.primary_field.PrimaryFieldGrid.build_cost`) than the direct evaluations of every face
        (:attr:`n_faces`) that this simulation's earlier solves with the coil made plus the ``solves`` to come would:
        a session of single coil moves builds the grid once its direct solves have cost as much, so it never pays
        more than twice the cheaper choice.  A resample costs next to nothing beside either
        (``benchmarks/RESULTS.md``: 0.13 s against 12.5 s and 65 s for a 256^3 head).
        """
        if coil.sampled is not None:
            return False
        if self.held_grid(coil) is not None:
            return True
        if self.grid_cache_dir is not None:
            if cached_grid_path(coil, self.grid_cache_dir, spacing_mm=self.grid_spacing_mm).is_file():
                return True
        coming = self._direct_faces.get(coil.sha256, 0) + max(int(solves), 1) * self.n_faces
        return coming > PrimaryFieldGrid.build_cost(coil, self.grid_spacing_mm)

    def held_grid(self, coil: Coil) -> Optional[PrimaryFieldGrid]:
        """The coil-frame grid of ``coil`` that this simulation holds (given, or built by a solve), else None."""
        return self._grids.get(coil.sha256)

    def _grid_for(self, coil: Coil, progress, cancel) -> PrimaryFieldGrid:
        grid = self.held_grid(coil)
        if grid is None:
            if self.grid_cache_dir is None:
                grid = PrimaryFieldGrid(coil, spacing_mm=self.grid_spacing_mm, progress=progress, cancel=cancel)
            else:
                grid = cached_grid(coil, self.grid_cache_dir, spacing_mm=self.grid_spacing_mm, progress=progress,
                                   cancel=cancel)
            self._grids[coil.sha256] = grid
        return grid

    def solve(
        self,
        coil: Coil,
        coil_to_ras: np.ndarray,
        didt: float,
        *,
        progress: Optional[Callable[[float, str], None]] = None,
        cancel: Optional[Callable[[], bool]] = None,
        solves: int = 1,
    ) -> EFieldResult:
        """Induced E-field for one coil position.

        Parameters
        ----------
        coil : Coil
        coil_to_ras : array (4, 4)
            Coil pose, mm (see :mod:`CondNetLogic.coil`; :func:`~CondNetLogic.coil.coil_pose` builds it).
        didt : float
            Current slope dI/dt, A/s (``coil.didt_max`` is the maximum stimulator output).
        progress : callable, optional
            ``progress(fraction, message)``.
        cancel : callable, optional
            ``cancel() -> bool``; raises :class:`~CondNetLogic.errors.Cancelled` when true.
        solves : int
            Solves with this coil the caller is about to make, this one included (a pose search passes how many
            poses are left): in the ``"auto"`` mode they decide whether building a grid pays off.

        Returns
        -------
        EFieldResult

        Raises
        ------
        TypeError
            If ``coil`` is not a :class:`Coil`.
        ValueError
            For a bad pose or ``didt``, or a coil wire inside the head or within ``MIN_WIRE_DISTANCE_MM``
            (1 mm) of a conducting face midpoint (faces lie on voxel-centre planes, so a wire may come up to
            half a voxel closer to the staircase surface of the head).
        Cancelled
            When ``cancel()`` returns true.
        """
        if not isinstance(coil, Coil):
            raise TypeError(f"coil must be a Coil; got {type(coil).__name__}")
        pose = check_coil_to_ras(coil_to_ras)
        didt = float(didt)
        if not np.isfinite(didt) or didt == 0:
            raise ValueError(f"didt must be a finite, non-zero current slope in A/s; got {didt}")

        def report(fraction, message):
            if progress is not None:
                progress(fraction, message)

        def check_cancel():
            if cancel is not None and cancel():
                raise Cancelled("E-field simulation cancelled")

        start = time.perf_counter()
        check_wire_outside(coil, pose, Volume(self._mask, self._geometry.ijk_to_ras))
        mode = "sampled" if coil.sampled is not None else self.primary_field
        if mode == "auto":
            mode = "grid" if self.grid_pays_off(coil, solves) else "direct"
        grid = None
        if mode == "grid":
            grid = self._grid_for(coil, lambda f, m: report(0.25 * f, m), cancel)
        elif mode == "direct":
            self._direct_faces[coil.sha256] = self._direct_faces.get(coil.sha256, 0) + self.n_faces
        check_cancel()
        report(0.25, f"primary field ({mode})")
        faces = dadt_faces(
            self._geometry, coil, pose, didt, mask=self._mask, grid=grid, min_distance_mm=MIN_WIRE_DISTANCE_MM,
            progress=lambda f, m: report(0.25 + 0.05 * f, m), cancel=cancel,
        )
        time_primary = time.perf_counter() - start
        check_cancel()
        log_tol = np.log(self.tol)

        def on_iteration(iteration, relative_residual):
            fraction = min(1.0, max(0.0, np.log(max(relative_residual, 1e-300)) / log_tol))
            report(0.3 + 0.65 * fraction, f"solving: iteration {iteration}, residual {relative_residual:.2e}")

        report(0.3, "solving the potential")
        x0 = None
        if self.warm_start and self._previous_didt is not None:
            x0 = self._potential * (didt / self._previous_didt)
        # The potential goes into the previous call's array (the warm start was copied from it already).
        psi, solve_info = self.solver.solve(
            faces, tol=self.tol, maxiter=self.maxiter, callback=on_iteration, cancel=cancel, x0=x0,
            out=self._potential,
        )
        self._potential = psi
        self._previous_didt = didt if self.warm_start else None
        e_full = np.zeros(self.conductivity.shape + (3,), dtype=np.float32)
        magnitude = np.zeros(self.conductivity.shape, dtype=np.float32)
        self.solver.electric_field(psi, faces, rotation=self.conductivity.direction, out=e_full[self._crop],
                                   magnitude=magnitude[self._crop])
        total = time.perf_counter() - start
        info = {
            "iterations": int(solve_info["iterations"]),
            "residual": float(solve_info["residual"]),
            "true_residual": float(solve_info["true_residual"]),
            "converged": bool(solve_info["converged"]),
            "device": str(solve_info["device"]),
            "fallbacks": list(solve_info["fallbacks"]),
            "tol": self.tol,
            "didt": didt,
            "coil_name": coil.name,
            "coil_sha256": coil.sha256,
            "coil_to_ras": pose.tolist(),
            "primary_field": mode,
            "warm_start": bool(solve_info["warm_start"]),
            "timings": {
                "setup": self.time_setup_s,
                "primary_field": time_primary,
                "solve": float(solve_info["time_solve_s"]),
                "total": total,
            },
        }
        report(1.0, f"done: {info['iterations']} iterations, max |E| {float(magnitude.max()):.1f} V/m")
        return EFieldResult(
            e_vector=self.conductivity.with_array(e_full),
            e_magnitude=self.conductivity.with_array(magnitude),
            info=info,
        )


def search_poses(
    mask: Optional[Volume],
    start_ras,
    normal_into_head,
    handles: Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]],
    *,
    radius_mm: float = 0.0,
    step_mm: float = 5.0,
    scalp_offset_mm: float,
) -> tuple:
    """Coil poses for :func:`strongest_pose`: at the scalp point ``start_ras`` with ``normal_into_head`` and, with
    ``radius_mm`` > 0, at the scalp points of a ``step_mm`` grid within that distance
    (:func:`~CondNetLogic.scalp.scalp_points_around`), each with its scalp normal on the head ``mask`` (needed only
    then).

    ``handles(point, normal)`` gives the handle directions (RAS) to try at a centre (its scalp point, RAS mm) with
    that normal.  Returns
    ``(poses, scalp_points)``: lists of (4, 4) poses (coil centre ``scalp_offset_mm`` outside the scalp, mm) and
    of the scalp point (3,) of each, the start's poses first.
    """
    from .coil import coil_pose
    from .scalp import scalp_normal, scalp_points_around

    start = np.asarray(start_ras, dtype=float)
    centres = [(start, np.asarray(normal_into_head, dtype=float))]
    if radius_mm > 0:
        centres += [(point, scalp_normal(mask, point))
                    for point in scalp_points_around(mask, start, normal_into_head, radius_mm, step_mm)[1:]]
    poses, points = [], []
    for point, normal in centres:
        for handle in handles(point, normal):
            poses.append(coil_pose(point, normal, handle, scalp_offset_mm=scalp_offset_mm))
            points.append(point)
    return poses, points


def strongest_pose(
    simulation: EFieldSimulation,
    coil: Coil,
    poses: Sequence[np.ndarray],
    didt: float,
    roi: np.ndarray,
    *,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> tuple:
    """Solve for each coil pose and keep the one with the highest mean ``|E|`` in ``roi``.

    Parameters
    ----------
    simulation : EFieldSimulation
        Built once; each pose is one more solve.
    coil : Coil
    poses : sequence of array (4, 4)
        Coil poses, mm (e.g. one coil position at several handle angles).
    didt : float
        A/s.
    roi : bool array (I, J, K)
        Region on the conductivity's grid (e.g. a sphere around a cortical target), with a conducting voxel.
    progress, cancel : callable, optional
        As :meth:`EFieldSimulation.solve`; the fraction covers all poses.

    Returns
    -------
    (int, EFieldResult, list of dict)
        The index of the strongest pose, its result, and per pose ``{"mean", "max", "p99"}`` of ``|E|`` in the
        ROI (V/m) and the solver's ``iterations``.  Only two fields are held at a time.
    """
    from .metrics import roi_stats

    if len(poses) == 0:
        raise ValueError("give at least one coil pose")
    rows, best, best_result = [], -1, None
    for number, pose in enumerate(poses):
        def report(fraction, message, number=number):
            if progress is not None:
                progress((number + fraction) / len(poses), f"pose {number + 1} of {len(poses)}: {message}")

        result = simulation.solve(coil, pose, didt, progress=report, cancel=cancel, solves=len(poses) - number)
        stats = roi_stats(result.e_magnitude, roi)
        rows.append({**{key: stats[key] for key in ("mean", "max", "p99")}, "iterations": result.info["iterations"]})
        if best < 0 or stats["mean"] > rows[best]["mean"]:
            best, best_result = number, result
        del result
    return best, best_result, rows


def ensemble_spread(
    members: Sequence[Volume],
    coil: Coil,
    coil_to_ras: np.ndarray,
    didt: float,
    *,
    like: Volume,
    roi: Optional[np.ndarray] = None,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    **options,
) -> tuple:
    """How ``|E|`` of one coil pose varies across an ensemble of conductivity maps of one head.

    For example CondNet's three slicing directions (``condnet predict --save-directions``), whose mean is the
    predicted conductivity and whose spread its uncertainty, or maps made with other weights or tables.  Each
    member gets its own solver (a coil-frame grid that one builds serves the next); only the magnitudes are kept.

    Parameters
    ----------
    members : sequence of Volume
        Conductivity maps (S/m), at least two, each on the grid of ``like``.
    coil, coil_to_ras, didt
        As :meth:`EFieldSimulation.solve` (pose in mm, dI/dt in A/s).
    like : Volume
        The grid the members must share (the main conductivity's).
    roi : bool array (I, J, K), optional
        Region of ``like``'s grid for per-member statistics.
    progress, cancel : callable, optional
        As :meth:`EFieldSimulation.solve`; the fraction covers all members.
    **options
        Passed to :class:`EFieldSimulation` (``device``, ``tol``, ``dtype``, ...).

    Returns
    -------
    (Volume, list of dict)
        The voxel-wise population sd (ddof=0) of ``|E|`` across the members, float32 V/m on ``like``'s grid, and
        per member ``{"head": ..., "roi": ... (with ``roi``), "iterations", "converged", "primary_field"}``
        (``head`` and ``roi`` as :func:`~CondNetLogic.metrics.roi_stats` gives them).

    Raises
    ------
    ValueError
        Fewer than two members, a member on another grid, or any error of a member's solve (named by its number).
    """
    from .metrics import roi_stats

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two conductivity maps; got {len(members)}")
    for number, member in enumerate(members, start=1):
        if not isinstance(member, Volume) or not member.same_grid(like):
            raise ValueError(f"ensemble member {number} is not on the conductivity's grid (shape {like.shape}, "
                             "the same affine): resample it first (condnet resample)")
    magnitudes, rows = [], []
    for number, member in enumerate(members):
        def report(fraction, message, number=number):
            if progress is not None:
                progress((number + fraction) / len(members), f"member {number + 1} of {len(members)}: {message}")

        try:
            simulation = EFieldSimulation(member, cancel=cancel, **options)
            result = simulation.solve(coil, coil_to_ras, didt, progress=report, cancel=cancel,
                                      solves=len(members) - number)
        except ValueError as err:
            raise ValueError(f"ensemble member {number + 1}: {err}") from err
        grid = simulation.held_grid(coil)
        if grid is not None:  # built for this member: the next members resample it too
            options = {**options, "grid": grid}
        del simulation
        row = {"head": roi_stats(result.e_magnitude)}
        if roi is not None:
            row["roi"] = roi_stats(result.e_magnitude, roi)
        rows.append({**row, **{key: result.info[key] for key in ("iterations", "converged", "primary_field")}})
        magnitudes.append(result.e_magnitude.array)
        del result
    spread = np.std(np.stack(magnitudes), axis=0).astype(np.float32)
    return like.with_array(spread), rows


def ensemble_statistics(rows: Sequence[dict]) -> dict:
    """Mean, sd (population, ddof=0), min and max across the members of :func:`ensemble_spread`'s rows: of the
    head's 99th percentile of ``|E|`` (``"head_p99"``) and, when the rows have an ROI, of its mean ``|E|``
    (``"roi_mean"``); all V/m."""
    def across(values) -> dict:
        values = np.asarray(values, dtype=float)
        return {"mean": float(values.mean()), "sd": float(values.std()), "min": float(values.min()),
                "max": float(values.max())}

    statistics = {"head_p99": across([row["head"]["p99"] for row in rows])}
    if "roi" in rows[0]:
        statistics["roi_mean"] = across([row["roi"]["mean"] for row in rows])
    return statistics
