"""The one volume type at the package boundary: an array plus its voxel-to-world affine.

Axis order and frames
---------------------
``Volume.array`` is indexed ``(I, J, K)`` for scalar volumes and ``(I, J, K, C)`` for vector volumes
(for example the E-field, ``C = 3`` with components along R, A, S).  ``Volume.ijk_to_ras`` is the 4x4
matrix that maps a voxel index ``(i, j, k, 1)`` to RAS world coordinates in millimetres, the convention
of 3D Slicer and nibabel.  ITK, SimpleITK and DICOM use LPS; convert only with the helpers below.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "Volume",
    "affine_from_geometry",
    "check_mask",
    "lps_to_ras_affine",
    "lps_to_ras_points",
    "ras_to_lps_affine",
    "ras_to_lps_points",
]

#: Homogeneous 4x4 matrix that flips the first two world axes: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_to_lps_affine(affine_ras: np.ndarray) -> np.ndarray:
    """Return the voxel-to-LPS affine for a voxel-to-RAS affine (both 4x4, mm)."""
    return LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)


def lps_to_ras_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Return the voxel-to-RAS affine for a voxel-to-LPS affine (both 4x4, mm)."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=float)


def ras_to_lps_points(points_ras: np.ndarray) -> np.ndarray:
    """Convert points (..., 3) from RAS to LPS (mm).

    >>> ras_to_lps_points(np.array([1.0, 2.0, 3.0]))
    array([-1., -2.,  3.])
    """
    points = np.array(points_ras, dtype=float, copy=True)
    points[..., :2] *= -1.0
    return points


def lps_to_ras_points(points_lps: np.ndarray) -> np.ndarray:
    """Convert points (..., 3) from LPS to RAS (mm)."""
    return ras_to_lps_points(points_lps)


def check_mask(mask, shape) -> np.ndarray:
    """Return ``mask`` as a boolean array, checking it has the given spatial ``shape``.

    Raises
    ------
    TypeError
        If the mask is not boolean (masks are never guessed from numbers).
    ValueError
        If its shape differs from ``shape``.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be boolean (a bool array); got dtype {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from the volume shape {tuple(shape)}")
    return mask


def affine_from_geometry(spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Build a 4x4 voxel-to-world affine from spacing (3,) mm, origin (3,) mm and direction (3, 3).

    ``direction[:, d]`` is the unit world vector of voxel axis ``d``; the frame of origin and direction
    (RAS or LPS) is the frame of the result.
    """
    spacing = np.asarray(spacing, dtype=float).reshape(3)
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[np.newaxis, :]
    affine[:3, 3] = np.asarray(origin, dtype=float).reshape(3)
    return affine


@dataclass(frozen=True, eq=False)
class Volume:
    """A scalar ``(I, J, K)`` or vector ``(I, J, K, C)`` array with its voxel-to-RAS affine (mm).

    Parameters
    ----------
    array : ndarray (I, J, K) or (I, J, K, C)
        Voxel values; axis ``d`` of the array is voxel axis ``d`` of ``ijk_to_ras``.
    ijk_to_ras : ndarray (4, 4)
        Maps ``(i, j, k, 1)`` to RAS millimetres.

    Raises
    ------
    ValueError
        If the array is not 3D/4D or the affine is not an invertible 4x4 homogeneous matrix.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be (I, J, K) or (I, J, K, C); got shape {array.shape}")
        if min(array.shape[:3]) < 1:
            raise ValueError(f"Volume array is empty: shape {array.shape}")
        affine = np.array(self.ijk_to_ras, dtype=float)
        if affine.shape != (4, 4) or not np.allclose(affine[3], [0, 0, 0, 1]):
            raise ValueError(f"ijk_to_ras must be a homogeneous 4x4 matrix; got {affine!r}")
        if not np.all(np.isfinite(affine)):
            raise ValueError(f"ijk_to_ras holds NaN or infinite values: {affine!r}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("ijk_to_ras is singular (zero spacing or degenerate direction)")
        affine.setflags(write=False)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "ijk_to_ras", affine)

    @classmethod
    def from_geometry(
        cls, array: np.ndarray, *, spacing, origin=(0.0, 0.0, 0.0), direction=None
    ) -> Volume:
        """Build a volume from spacing (mm), origin (RAS mm) and direction (3x3, RAS columns; default identity)."""
        return cls(array, affine_from_geometry(spacing, origin, np.eye(3) if direction is None else direction))

    @property
    def shape(self) -> tuple:
        """Spatial shape ``(I, J, K)``."""
        return tuple(self.array.shape[:3])

    @property
    def n_components(self) -> int:
        """1 for scalar volumes, ``C`` for vector volumes."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along I, J, K in mm, shape (3,)."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0), shape (3,)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """Unit RAS vectors of the voxel axes as columns, shape (3, 3)."""
        return self.ijk_to_ras[:3, :3] / self.spacing[np.newaxis, :]

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """Voxel-to-LPS affine (4x4, mm), as ITK and DICOM use."""
        return ras_to_lps_affine(self.ijk_to_ras)

    @property
    def is_isotropic(self) -> bool:
        """True when the three spacings agree to 1e-4 relative."""
        spacing = self.spacing
        return bool(np.ptp(spacing) <= 1e-4 * spacing.max())

    def with_array(self, array: np.ndarray) -> Volume:
        """Return a volume with the same geometry and a new array of the same spatial shape."""
        array = np.asarray(array)
        if array.shape[:3] != self.shape:
            raise ValueError(f"new array shape {array.shape[:3]} differs from the volume's {self.shape}")
        return Volume(array, self.ijk_to_ras)

    def same_grid(self, other: Volume, *, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same spatial shape and affine (to ``atol_mm``)."""
        return self.shape == other.shape and bool(
            np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol_mm)
        )

    def ijk_to_ras_points(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices (..., 3) to RAS mm (..., 3)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_ijk_points(self, ras: np.ndarray) -> np.ndarray:
        """Map RAS mm points (..., 3) to continuous voxel indices (..., 3)."""
        inverse = np.linalg.inv(self.ijk_to_ras)
        ras = np.asarray(ras, dtype=float)
        return ras @ inverse[:3, :3].T + inverse[:3, 3]

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.4g}" for s in self.spacing)
        return f"Volume(shape={self.array.shape}, dtype={self.array.dtype}, spacing_mm=({spacing}))"
