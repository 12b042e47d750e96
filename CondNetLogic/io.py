"""Read and write volumes (NIfTI, NRRD, MHA) through SimpleITK, keeping the full geometry.

SimpleITK stores images in LPS with ``GetArrayFromImage`` giving ``(K, J, I[, C])``; this module is
the one place where that is converted to the package convention (``(I, J, K[, C])`` and ``ijk_to_ras``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import VolumeReadError
from .volume import LPS_TO_RAS, Volume

__all__ = ["SUPPORTED_SUFFIXES", "check_finite", "file_sha256", "read_volume", "write_volume"]

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")


def read_volume(path: str | os.PathLike, *, allow_vector: bool = False) -> Volume:
    """Read a 3D scalar (or, with ``allow_vector``, 3D vector) volume.

    Parameters
    ----------
    path : str or PathLike
        NIfTI, NRRD or MetaImage file.
    allow_vector : bool
        Accept multi-component voxels (returned as ``(I, J, K, C)``).

    Returns
    -------
    Volume
        Array ``(I, J, K)`` or ``(I, J, K, C)`` with its voxel-to-RAS affine in mm.

    Raises
    ------
    VolumeReadError
        If the file is missing, unreadable or truncated, is not 3D (a 4D time series, a 2D image), or is
        a vector image when ``allow_vector`` is false.
    """
    import SimpleITK as sitk

    path = Path(path)
    _suffix(path)
    if not path.is_file():
        raise VolumeReadError(f"{path}: no such file")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    try:
        image = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(image)
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise VolumeReadError(f"{path}: cannot read the file (truncated or corrupt?): {first_line}") from err
    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    if dimension != 3:
        raise VolumeReadError(
            f"{path}: expected a 3D volume, got a {dimension}D image of size {image.GetSize()}"
            + ("; split time series or multi-echo data into 3D files first" if dimension == 4 else "")
        )
    if components > 1 and not allow_vector:
        raise VolumeReadError(f"{path}: expected a scalar volume, got {components} components per voxel")
    array = np.ascontiguousarray(np.moveaxis(data, (0, 1, 2), (2, 1, 0)))
    spacing = np.array(image.GetSpacing(), dtype=float)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing[np.newaxis, :]
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return Volume(array, LPS_TO_RAS @ ijk_to_lps)


def _check_nifti_complete(path: Path) -> None:
    """Raise if a NIfTI file holds fewer data bytes than its header promises.

    ITK's NIfTI reader fills missing bytes of a truncated file with zeros without an error, so a partly
    copied or interrupted download would otherwise load as a silently damaged volume.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
            if len(header) < 348:
                raise VolumeReadError(f"{path}: truncated NIfTI header ({len(header)} bytes)")
            for order in "<>":
                size = struct.unpack(order + "i", header[:4])[0]
                if size in (348, 540):
                    break
            else:
                raise VolumeReadError(f"{path}: not a NIfTI file (header size field {header[:4]!r})")
            if size == 348:
                dims = struct.unpack(order + "8h", header[40:56])
                bitpix = struct.unpack(order + "h", header[72:74])[0]
                vox_offset = struct.unpack(order + "f", header[108:112])[0]
            else:
                dims = struct.unpack(order + "8q", header[16:80])
                bitpix = struct.unpack(order + "h", header[14:16])[0]
                vox_offset = struct.unpack(order + "q", header[168:176])[0]
            n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(int(dims[0]), 1)]]))
            expected = int(vox_offset) + n_voxels * int(bitpix) // 8
            available = len(header)
            while chunk := handle.read(1 << 22):
                available += len(chunk)
    except (EOFError, OSError, zlib.error) as err:
        raise VolumeReadError(f"{path}: cannot read the file (truncated or corrupt?): {err}") from err
    if available < expected:
        raise VolumeReadError(f"{path}: truncated NIfTI file: {available} bytes, the header promises {expected}")


def write_volume(volume: Volume, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a volume (scalar or vector) with its geometry; format from the file suffix.

    Parameters
    ----------
    volume : Volume
        What to write; vector volumes are written as multi-component images.
    path : str or PathLike
        Destination ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``.
    overwrite : bool
        Replace an existing file.  Without it an existing file is an error: user files are never
        replaced silently.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        If the suffix is not supported.
    """
    import SimpleITK as sitk

    path = Path(path)
    _suffix(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    is_vector = array.ndim == 4
    itk_array = np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))
    image = sitk.GetImageFromArray(itk_array, isVector=is_vector)
    ijk_to_lps = volume.ijk_to_lps
    spacing = volume.spacing
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in ijk_to_lps[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (ijk_to_lps[:3, :3] / spacing[np.newaxis, :]).ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def check_finite(volume: Volume, *, name: str = "volume") -> None:
    """Raise ``ValueError`` naming ``name`` if the volume holds NaN or infinite values."""
    if np.issubdtype(volume.array.dtype, np.floating) and not np.all(np.isfinite(volume.array)):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        raise ValueError(f"{name}: {bad} voxels are NaN or infinite")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (weights, coil and input files in sidecars)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
