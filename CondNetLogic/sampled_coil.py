"""Coils given as a sampled A-field: SimNIBS's NIfTI coil files (``coil2nifti``, ``TmsCoil.write_nifti``).

Such a file is a 4D NIfTI-1 volume ``(X, Y, Z, 3)``: at each node the magnetic vector potential ``A`` per
ampere of coil current (T m / A, which is ``dA/dt`` per unit ``dI/dt``: V/m per A/s), with components along the
coil-frame axes, and a voxel-to-coil-frame affine in mm (nibabel's ``affine``: the sform, else the qform).
SimNIBS (``coil_numpy._get_field``, ``SampledGridPointElements.get_a_field``) maps each point into the grid
through ``inverse(affine) @ inverse(coil_to_ras)``, interpolates trilinearly, takes 0 outside the grid, rotates
the components by the pose's rotation and multiplies by dI/dt; :meth:`SampledField.resample` does the same on a
voxel lattice.  The coil frame is CondNet's (``+z`` into the head, ``+y`` the handle), as for SimNIBS's other
coil files.  A NIfTI coil file gives no maximum dI/dt: pass dI/dt, or wrap the file in a coil JSON file that
states it (``docs/coils.md``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["SampledField", "is_nifti_coil_file", "read_nifti_coil"]

logger = logging.getLogger(__name__)

#: Largest plausible |A| per ampere of coil current (T m / A).  A figure-8 coil of 2 x 10 turns gives about 1e-5
#: next to its wires; a file far above this holds dA/dt at some dI/dt, or A in other units.
_PLAUSIBLE_MAX_A_PER_AMPERE = 1e-3


def is_nifti_coil_file(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return str(path).lower().endswith((".nii", ".nii.gz"))


@dataclass(frozen=True, eq=False)
class SampledField:
    """A coil's A-field per ampere, sampled on a grid in the coil frame (read by :func:`read_nifti_coil`).

    Attributes
    ----------
    values : float32 array (X, Y, Z, 3)
        ``A`` per ampere of coil current, T m / A (= ``dA/dt`` in V/m per A/s of ``dI/dt``), coil-frame components.
    ijk_to_coil_mm : float array (4, 4)
        Node index -> coil-frame position, mm.
    path : Path
        The file it was read from (absolute).
    file_stamp : tuple of int
        ``(mtime_ns, size)`` of the file when it was read (see :meth:`is_current`).
    """

    values: np.ndarray
    ijk_to_coil_mm: np.ndarray
    path: Path
    file_stamp: tuple

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the grid's affine (float64) and values (float32), in C order."""
        digest = hashlib.sha256(np.ascontiguousarray(self.ijk_to_coil_mm, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(self.values, dtype="<f4").tobytes())
        return digest.hexdigest()

    @property
    def shape(self) -> tuple:
        """Grid nodes along the file's three axes."""
        return tuple(int(n) for n in self.values.shape[:3])

    @property
    def spacing_mm(self) -> np.ndarray:
        """Distance between neighbouring nodes along each of the file's axes, mm (3,)."""
        return np.linalg.norm(self.ijk_to_coil_mm[:3, :3], axis=0)

    def extent_mm(self) -> np.ndarray:
        """The grid's bounding box in the coil frame, ``[[xmin, xmax], [ymin, ymax], [zmin, zmax]]`` (mm)."""
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(3, -1).T
        points = corners @ self.ijk_to_coil_mm[:3, :3].T + self.ijk_to_coil_mm[:3, 3]
        return np.stack([points.min(axis=0), points.max(axis=0)], axis=1)

    def peak_mm(self) -> np.ndarray:
        """Coil-frame position (mm) of the node with the largest ``|A|``: near the windings."""
        index = np.unravel_index(int(np.argmax(np.einsum("...c,...c->...", self.values, self.values))), self.shape)
        return self.ijk_to_coil_mm[:3, :3] @ np.asarray(index, dtype=float) + self.ijk_to_coil_mm[:3, 3]

    def is_current(self) -> bool:
        """Whether the file still has the time stamp and size it had when read."""
        try:
            stat = self.path.stat()
        except OSError:
            return False
        return (stat.st_mtime_ns, stat.st_size) == tuple(self.file_stamp)

    def resample(self, origin_mm, steps_mm, mask, projection, pose, didt: float) -> tuple:
        """``dA/dt`` (V/m) projected by ``projection`` on a RAS lattice, trilinear as SimNIBS interpolates.

        Parameters
        ----------
        origin_mm : float array (3,)
            RAS position of lattice point ``(0, 0, 0)``, mm.
        steps_mm : float array (3, 3)
            Row ``d``: RAS step of lattice axis ``d``, mm.
        mask : bool array (I, J, K)
            Lattice points to evaluate (others stay 0).
        projection : float array (P, 3)
            Rows: RAS directions onto which ``dA/dt`` is projected.
        pose : float array (4, 4)
            ``coil_to_ras`` (mm), already checked to be a rigid pose.
        didt : float
            Current slope, A/s.

        Returns
        -------
        tuple ``(out (I, J, K, P) float64, outside (I, J, K) bool)``
            ``out`` is 0 where ``mask`` is false and at points outside the grid, which ``outside`` marks.
        """
        from . import _primary_kernels as kernels

        rotation, translation = pose[:3, :3], pose[:3, 3]
        to_index = np.linalg.inv(self.ijk_to_coil_mm)
        grid_origin = to_index[:3, :3] @ (rotation.T @ (np.asarray(origin_mm, dtype=float) - translation)) \
            + to_index[:3, 3]
        grid_steps = np.asarray(steps_mm, dtype=float) @ rotation @ to_index[:3, :3].T
        matrix = float(didt) * np.asarray(projection, dtype=float) @ rotation
        out = np.zeros(mask.shape + (matrix.shape[0],))
        outside = np.zeros(mask.shape, dtype=bool)
        if mask.size:
            kernels.resample_lattice(np.ascontiguousarray(grid_origin), np.ascontiguousarray(grid_steps), mask,
                                     self.values, np.ascontiguousarray(matrix), out, outside)
        return out, outside


def read_nifti_coil(path: Union[str, os.PathLike]) -> SampledField:
    """Read a SimNIBS NIfTI coil file: the A-field per ampere on a grid in the coil frame.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ImportError
        Without nibabel (``pip install nibabel``).
    ValueError
        If the file is truncated or corrupt, is not a 4D ``(X, Y, Z, 3)`` volume of at least 2 nodes per axis,
        has no voxel-to-coil transform (sform and qform codes 0) or a singular one, holds NaN or infinite values,
        or is zero everywhere.
    """
    from .io import _check_nifti_complete

    path = Path(path).absolute()
    if not path.is_file():
        raise FileNotFoundError(f"coil file {path} does not exist")
    try:
        import nibabel
    except ImportError as err:
        raise ImportError(f"{path}: NIfTI coil files are read with nibabel (pip install nibabel)") from err
    stat = path.stat()
    _check_nifti_complete(path, reading=False)  # nibabel reads a truncated .nii without an error
    try:
        image = nibabel.Nifti1Image.from_filename(str(path))
        values = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as err:  # nibabel raises several types (ImageFileError, EOFError, zlib.error, ValueError)
        raise ValueError(f"{path}: cannot read the NIfTI coil file (truncated or corrupt?): {err}") from err
    if values.ndim == 5 and values.shape[3] == 1:  # a vector volume as ITK writes it (intent "vector")
        values = values[:, :, :, 0, :]
    if values.ndim != 4 or values.shape[3] != 3 or min(values.shape[:3]) < 2:
        raise ValueError(f"{path}: a NIfTI coil file holds the A-field as a 4D volume (X, Y, Z, 3) with at least 2 "
                         f"nodes per axis, as SimNIBS's coil2nifti writes it; got shape {tuple(values.shape)}")
    header = image.header
    if int(header["sform_code"]) <= 0 and int(header["qform_code"]) <= 0:
        raise ValueError(f"{path}: the file has no voxel-to-coil transform (sform and qform codes are 0), so where "
                         "its nodes lie in the coil frame is unknown")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{path}: the voxel-to-coil transform is singular or not finite: {affine.tolist()}")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(f"{path}: {bad} of {values.size} A-field values are NaN or infinite")
    peak = float(np.sqrt(np.max(np.einsum("...c,...c->...", values, values))))
    if peak == 0.0:
        raise ValueError(f"{path}: the A-field is zero everywhere")
    if peak > _PLAUSIBLE_MAX_A_PER_AMPERE:
        logger.warning("%s: the largest |A| is %.3g T m/A, far above a TMS coil's A per ampere (about 1e-5): does "
                       "the file hold dA/dt at some dI/dt, or other units? It is used as A per ampere", path, peak)
    field = SampledField(
        values=np.ascontiguousarray(values, dtype=np.float32),
        ijk_to_coil_mm=affine,
        path=path,
        file_stamp=(stat.st_mtime_ns, stat.st_size),
    )
    field.values.setflags(write=False)
    field.ijk_to_coil_mm.setflags(write=False)
    return field
