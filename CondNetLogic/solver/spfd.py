"""Scalar-potential finite differences (SPFD) on an isotropic voxel grid.

The induced potential ``psi`` (V) solves paper Eq. 4, ``div(sigma grad psi) = -div(sigma dA/dt)``, and the
field is Eq. 5, ``E = -grad psi - dA/dt``.  Unknowns sit at voxel centres; the conductance of the face
between voxels ``p`` and ``q = p + e_d`` is the series (harmonic) combination of the two voxels,
``g = 2 s_p s_q / (s_p + s_q)`` (S/m), zero when either is air, so no current crosses into air and the
outer boundary is insulating (homogeneous Neumann).  Conservation of the current ``J = sigma E`` through
the six faces of voxel ``p`` reads

.. math:: \\frac{1}{h^2} \\sum_f g_f (\\psi_p - \\psi_q) = \\frac{1}{h} \\sum_f s_f\\, g_f\\, a_f,

where ``a_f`` is the component of dA/dt along ``+d`` at the face midpoint and ``s_f = +1`` for the face
towards ``+d``, ``-1`` towards ``-d``.  The left side is the positive semi-definite SPFD operator ``A``
(a discrete ``-div(sigma grad .)``), the right side ``b`` a discrete ``div(sigma dA/dt)``, both in A/m^3.

All arrays are indexed ``(I, J, K)`` along the voxel axes; "component d" means along ``+axis d``.
SI units throughout: metres, S/m, V, V/m.

References
----------
T. W. Dawson and M. A. Stuchly, "Analytic validation of a three-dimensional scalar-potential finite-difference
code for low-frequency magnetic induction", ACES J. 11(3), 72-81, 1996.
E. A. Rashed, J. Gomez-Tames, A. Hirata, IEEE TMI 39(7), 2020, doi:10.1109/TMI.2020.2969682, Eqs. 4-5.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "assemble_operator",
    "assemble_rhs",
    "conductor_components",
    "electric_field",
    "face_conductances",
    "solver_dtype",
    "validate_dadt_faces",
    "validate_sigma",
]


def solver_dtype(dtype) -> np.dtype:
    """The floating dtype the solver works in for input of ``dtype``: float32 stays, all else is float64.

    >>> solver_dtype(np.float32), solver_dtype(np.uint8), solver_dtype(np.float16)
    (dtype('float32'), dtype('float64'), dtype('float64'))
    """
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def validate_sigma(sigma) -> np.ndarray:
    """Check a conductivity volume (S/m) and return it as an ndarray of a floating dtype.

    Raises
    ------
    TypeError
        If ``sigma`` is not a real numeric array.
    ValueError
        If it is not 3-D, holds NaN/inf or negative values, or has no conductive voxel.
    """
    sigma = np.asarray(sigma)
    if sigma.dtype.kind not in "biuf":
        raise TypeError(f"sigma must be a real numeric array (S/m); got dtype {sigma.dtype}")
    if sigma.ndim != 3:
        raise ValueError(f"sigma must be 3-D (I, J, K); got shape {sigma.shape}")
    if sigma.dtype.kind != "f":
        sigma = sigma.astype(np.float64)
    if not np.all(np.isfinite(sigma)):
        bad = int(np.count_nonzero(~np.isfinite(sigma)))
        raise ValueError(f"sigma holds {bad} NaN/inf voxels; expected finite S/m")
    if sigma.size and sigma.min() < 0:
        raise ValueError(f"sigma must be >= 0 S/m (0 = air); got minimum {float(sigma.min())}")
    if not np.any(sigma > 0):
        raise ValueError(f"sigma {sigma.shape} has no conductive voxel (all air): nothing to solve")
    return sigma


def validate_dadt_faces(dadt_faces, shape, *, check_finite: bool = True) -> tuple:
    """Check the face values of dA/dt (V/m) for a grid of ``shape`` and return them as float arrays (float32 and
    float64 ones as they are, other real dtypes cast to float64).

    Parameters
    ----------
    dadt_faces : sequence of 3 arrays
        ``(ax (I-1, J, K), ay (I, J-1, K), az (I, J, K-1))``: component ``d`` of dA/dt at the midpoint of
        the face between voxel ``p`` and ``p + e_d``.
    shape : tuple of 3 ints
        ``(I, J, K)``.
    check_finite : bool
        Also refuse NaN/inf values (the multigrid solver instead tests the values it reads, between conductive
        voxels, while it reads them).

    Raises
    ------
    TypeError
        If it is not a sequence of three real arrays.
    ValueError
        If a shape does not match or a value is not finite.
    """
    if isinstance(dadt_faces, np.ndarray) or not hasattr(dadt_faces, "__len__") or len(dadt_faces) != 3:
        raise TypeError("dadt_faces must be a tuple (ax, ay, az) of three face arrays; "
                        f"got {type(dadt_faces).__name__}")
    faces = []
    for axis, face in enumerate(dadt_faces):
        face = np.asarray(face)
        expected = tuple(n - 1 if d == axis else n for d, n in enumerate(shape))
        if face.dtype.kind not in "biuf":
            raise TypeError(f"dadt_faces[{axis}] must be real (V/m); got dtype {face.dtype}")
        if face.shape != expected:
            raise ValueError(f"dadt_faces[{axis}] must have shape {expected} for sigma {tuple(shape)}; "
                             f"got {face.shape}")
        if check_finite and not np.all(np.isfinite(face)):
            raise ValueError(f"dadt_faces[{axis}] holds NaN/inf values")
        faces.append(face if face.dtype in (np.float32, np.float64) else face.astype(np.float64))
    return tuple(faces)


def face_conductances(sigma) -> tuple:
    """Conductance of every interior face: the series combination of its two voxels (S/m).

    Parameters
    ----------
    sigma : ndarray (I, J, K)
        Conductivity in S/m, 0 for air.

    Returns
    -------
    gx, gy, gz : ndarray (I-1, J, K), (I, J-1, K), (I, J, K-1)
        ``2 s1 s2 / (s1 + s2)`` for the faces between ``p`` and ``p + e_d``; 0 where either voxel is air.
        Float32 input gives float32, anything else float64.

    Raises
    ------
    TypeError, ValueError
        See :func:`validate_sigma`.

    Examples
    --------
    >>> face_conductances(np.array([[[1.0]], [[3.0]], [[0.0]]]))[0].ravel()
    array([1.5, 0. ])
    """
    sigma = validate_sigma(sigma)
    sigma = sigma.astype(solver_dtype(sigma.dtype), copy=False)
    faces = []
    for axis in range(3):
        lo = sigma[tuple(slice(None, -1) if d == axis else slice(None) for d in range(3))]
        hi = sigma[tuple(slice(1, None) if d == axis else slice(None) for d in range(3))]
        total = lo + hi
        faces.append(np.divide(2 * lo * hi, total, out=np.zeros_like(total), where=total > 0))
    return tuple(faces)


def conductor_components(sigma) -> tuple:
    """Label the face-connected (6-connected) conductive regions of ``sigma``.

    Returns
    -------
    labels : ndarray (I, J, K) int32
        0 for air, ``1 .. n`` for the conductive components.
    n : int
        Number of components.  Each carries its own floating potential.
    """
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(sigma) > 0)
    return labels.astype(np.int32, copy=False), int(count)


def _axis_slices(axis: int, lo: bool) -> tuple:
    """Slices selecting ``p`` (``lo``) or ``p + e_axis`` of every face along ``axis``."""
    part = slice(None, -1) if lo else slice(1, None)
    return tuple(part if d == axis else slice(None) for d in range(3))


def _check_spacing(spacing_m) -> float:
    try:
        spacing = float(spacing_m)
    except (TypeError, ValueError) as err:
        raise TypeError(f"spacing_m must be a number (m); got {type(spacing_m).__name__}") from err
    if not np.isfinite(spacing) or spacing <= 0:
        raise ValueError(f"spacing_m must be a positive voxel size in metres; got {spacing_m}")
    if spacing > 0.1:
        raise ValueError(f"spacing_m = {spacing} m is larger than 10 cm; pass the voxel size in metres, not mm")
    return spacing


def assemble_operator(sigma, spacing_m: float) -> tuple:
    """Assemble the SPFD matrix on the conductive voxels (float64 reference, for tests and checks).

    Parameters
    ----------
    sigma : ndarray (I, J, K)
        Conductivity in S/m, 0 for air.
    spacing_m : float
        Isotropic voxel size ``h`` in metres.

    Returns
    -------
    A : scipy.sparse.csr_matrix (n, n) float64
        ``(A psi)_p = h^-2 sum_f g_f (psi_p - psi_q)`` in A/m^3 for ``psi`` in V: symmetric, positive
        semi-definite, with one constant null vector per connected component.
    index : ndarray (I, J, K) int64
        Row of each voxel in ``A`` (C order), -1 for air.

    Raises
    ------
    TypeError, ValueError
        See :func:`validate_sigma`; also for a non-positive ``spacing_m``.
    """
    from scipy import sparse

    sigma = validate_sigma(sigma)
    spacing = _check_spacing(spacing_m)
    conductive = sigma > 0
    index = np.full(sigma.shape, -1, dtype=np.int64)
    count = int(np.count_nonzero(conductive))
    index[conductive] = np.arange(count, dtype=np.int64)
    rows, cols, vals = [], [], []
    diagonal = np.zeros(count)
    for axis, g in enumerate(face_conductances(sigma.astype(np.float64))):
        on = g > 0
        p = index[_axis_slices(axis, True)][on]
        q = index[_axis_slices(axis, False)][on]
        value = g[on] / spacing**2
        rows += [p, q]
        cols += [q, p]
        vals += [-value, -value]
        diagonal += np.bincount(p, weights=value, minlength=count) + np.bincount(q, weights=value, minlength=count)
    rows.append(np.arange(count))
    cols.append(np.arange(count))
    vals.append(diagonal)
    matrix = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(count, count)).tocsr()
    return matrix, index


def assemble_rhs(sigma, dadt_faces, spacing_m: float) -> np.ndarray:
    """Right-hand side of :func:`assemble_operator`: ``b_p = h^-1 sum_f s_f g_f a_f`` (A/m^3).

    Parameters
    ----------
    sigma : ndarray (I, J, K)
        Conductivity in S/m, 0 for air.
    dadt_faces : tuple of ndarray
        ``(ax (I-1, J, K), ay (I, J-1, K), az (I, J, K-1))``, dA/dt along ``+d`` at the face midpoints (V/m).
    spacing_m : float
        Voxel size in metres.

    Returns
    -------
    b : ndarray (I, J, K)
        0 on air voxels.  Its sum over each connected component is zero (up to rounding): the system is
        compatible.  Float32 when both ``sigma`` and the faces are float32, else float64.
    """
    sigma = validate_sigma(sigma)
    faces = validate_dadt_faces(dadt_faces, sigma.shape)
    spacing = _check_spacing(spacing_m)
    dtype = solver_dtype(np.result_type(sigma.dtype, *(face.dtype for face in faces)))
    b = np.zeros(sigma.shape, dtype=np.float64)
    for axis, (g, a) in enumerate(zip(face_conductances(sigma.astype(np.float64)), faces)):
        flux = g * a.astype(np.float64, copy=False)
        b[_axis_slices(axis, True)] += flux
        b[_axis_slices(axis, False)] -= flux
    return (b / spacing).astype(dtype, copy=False)


def electric_field(psi, sigma, dadt_faces, spacing_m: float) -> np.ndarray:
    """Induced field ``E = -grad psi - dA/dt`` per voxel (paper Eq. 5), in V/m along the voxel axes.

    Parameters
    ----------
    psi : ndarray (I, J, K)
        Scalar potential in V (as returned by :func:`~CondNetLogic.solver.solve_potential`).
    sigma : ndarray (I, J, K)
        Conductivity in S/m, 0 for air.
    dadt_faces : tuple of ndarray
        As for :func:`assemble_rhs` (V/m).
    spacing_m : float
        Voxel size in metres.

    Returns
    -------
    E : ndarray (I, J, K, 3)
        On each conductive face ``E_f = -(psi_q - psi_p) / h - a_f``; component ``d`` of a voxel is the
        mean over its conductive faces along ``d`` (one-sided where only one is conductive).  Where a
        voxel has no conductive face along ``d`` no current flows along ``d`` and the component is 0; air
        voxels are 0.  Same dtype rule as :func:`assemble_rhs` with ``psi`` included.

    Raises
    ------
    TypeError, ValueError
        For bad ``sigma``/``dadt_faces``/``spacing_m`` or a ``psi`` whose shape differs from ``sigma``.
    """
    sigma = validate_sigma(sigma)
    faces = validate_dadt_faces(dadt_faces, sigma.shape)
    spacing = _check_spacing(spacing_m)
    psi = np.asarray(psi)
    if psi.dtype.kind not in "biuf":
        raise TypeError(f"psi must be a real array (V); got dtype {psi.dtype}")
    if psi.shape != sigma.shape:
        raise ValueError(f"psi must have the shape of sigma {sigma.shape}; got {psi.shape}")
    dtype = solver_dtype(np.result_type(psi.dtype, sigma.dtype, *(face.dtype for face in faces)))
    psi = psi.astype(np.float64, copy=False)
    field = np.zeros(sigma.shape + (3,), dtype=np.float64)
    for axis, (g, a) in enumerate(zip(face_conductances(sigma), faces)):
        lo, hi = _axis_slices(axis, True), _axis_slices(axis, False)
        on = g > 0
        face_field = np.where(on, -(psi[hi] - psi[lo]) / spacing - a, 0.0)
        total = np.zeros(sigma.shape)
        count = np.zeros(sigma.shape)
        total[lo] += face_field
        total[hi] += face_field
        count[lo] += on
        count[hi] += on
        field[..., axis] = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return field.astype(dtype, copy=False)
