"""Read and write volumes (NIfTI, NRRD, MHA) through SimpleITK, keeping the full geometry.

SimpleITK stores images in LPS with ``GetArrayFromImage`` giving ``(K, J, I[, C])``; this module is
the one place where that is converted to the package convention (``(I, J, K[, C])`` and ``ijk_to_ras``).

Where SimpleITK is not installed (a bare GPU machine, say), NIfTI files go through nibabel instead, read with the
transform ITK would choose and written with the codes and transforms ITK writes, so both paths give the same
volumes (tested against each other); the other formats then need SimpleITK.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, List, NamedTuple, Tuple

import numpy as np

from .errors import VolumeReadError
from .volume import LPS_TO_RAS, Volume

__all__ = [
    "SUPPORTED_SUFFIXES",
    "check_finite",
    "check_outputs",
    "file_sha256",
    "read_volume",
    "removed_on_error",
    "replaced_through_temporary",
    "write_text",
    "write_volume",
]

#: Formats written to a temporary file and renamed into place (the others keep data in a second file
#: whose name the header records, so they are written directly).
_SINGLE_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


#: Suffixes ITK recognises only in lower case: it cannot read or write ``scan.NII.GZ``, and it writes ``out.MHA`` or
#: ``out.MHD`` as ``out.mhd`` plus a data file, beside (or over) files that the name given does not show.
_LOWER_CASE_ONLY = (".nii", ".nii.gz", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    """The supported suffix of ``path`` (lower case); ``ValueError`` for another type, or for a NIfTI or MetaImage
    suffix that is not written in lower case."""
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            if suffix in _LOWER_CASE_ONLY and not path.name.endswith(suffix):
                raise ValueError(f"{path}: write the file type in lower case ({path.name[: -len(suffix)]}{suffix}): "
                                 "ITK reads and writes NIfTI and MetaImage files only under a lower-case suffix")
            return suffix
    raise ValueError(f"{path}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")


def read_volume(path: str | os.PathLike, *, allow_vector: bool = False) -> Volume:
    """Read a 3D scalar (or, with ``allow_vector``, 3D vector) volume.

    Parameters
    ----------
    path : str or PathLike
        NIfTI, NRRD or MetaImage file.
    allow_vector : bool
        Accept multi-component voxels (returned as ``(I, J, K, C)``), and a 4D NIfTI whose fourth axis has 3
        entries as a vector volume (nibabel's ``Nifti1Image(field, affine)`` of an ``(I, J, K, 3)`` field, as
        SimNIBS writes its E-fields, without the vector intent).

    Returns
    -------
    Volume
        Array ``(I, J, K)`` or ``(I, J, K, C)`` with its voxel-to-RAS affine in mm.

    Raises
    ------
    VolumeReadError
        If the file is missing, unreadable or truncated, is not 3D (a 4D time series, a 2D image), is
        a vector image when ``allow_vector`` is false, holds NaN, infinite or complex voxels, or records an
        orientation or voxel size that tools read differently (NIfTI qform/sform/pixdim disagreeing).
    ImportError
        Without SimpleITK, for a file that is not NIfTI (or without nibabel either).
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise VolumeReadError(f"{path}: no such file")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    sitk = _simpleitk()
    if sitk is None:
        volume = _read_nifti_nibabel(path, suffix, allow_vector)
    else:
        volume = _read_itk(sitk, path, allow_vector)
    _check_voxel_values(volume.array, path)
    return volume


def _check_voxel_values(array: np.ndarray, path: Path) -> None:
    """Raise unless the voxels are real numbers, all finite (NIfTI floats are also counted in the file's bytes,
    since ITK reads their NaN as 0; this catches the other formats and values made infinite by ``scl_slope``)."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        kind = "complex numbers" if np.iscomplexobj(array) else "not numbers"
        raise VolumeReadError(f"{path}: its voxels are of type {array.dtype} ({kind}); expected real intensities "
                              "(for complex data, save the magnitude first)")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise VolumeReadError(f"{path}: {bad} of {array.size} voxel values are NaN or infinite; expected finite "
                                  "values (replace them, e.g. by 0 outside the head, before using the file)")


def _read_itk(sitk, path: Path, allow_vector: bool) -> Volume:
    """``read_volume`` through SimpleITK."""
    try:
        image = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(image)
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        if "orthonormal" in first_line:
            raise VolumeReadError(
                f"{path}: its voxel axes are not orthogonal (a sheared or skewed sform), which ITK cannot "
                "represent; resample it onto an orthogonal grid first (e.g. with FSL flirt -applyxfm or "
                "nibabel.processing.resample_from_to)") from err
        raise VolumeReadError(f"{path}: cannot read the file (truncated or corrupt?): {first_line}") from err
    dimension = image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    if dimension == 4 and allow_vector and components == 1 and image.GetSize()[3] == 3:
        # A vector field written as a 4D image (fourth axis = the 3 components): (I, J, K, 3) like the 3D case.
        return Volume(np.ascontiguousarray(np.moveaxis(data, (0, 1, 2, 3), (3, 2, 1, 0))), _itk_ijk_to_ras(image))
    if dimension != 3:
        raise VolumeReadError(
            f"{path}: expected a 3D volume, got a {dimension}D image of size {image.GetSize()}"
            + ("; split time series or multi-echo data into 3D files first" if dimension == 4 else "")
        )
    if components > 1 and not allow_vector:
        raise VolumeReadError(f"{path}: expected a scalar volume, got {components} components per voxel")
    return Volume(np.ascontiguousarray(np.moveaxis(data, (0, 1, 2), (2, 1, 0))), _itk_ijk_to_ras(image))


def _itk_ijk_to_ras(image) -> np.ndarray:
    """The voxel-to-RAS affine (mm) of an ITK image's first three axes (ITK's geometry is LPS)."""
    n = image.GetDimension()
    spacing = np.array(image.GetSpacing(), dtype=float)[:3]
    direction = np.array(image.GetDirection(), dtype=float).reshape(n, n)[:3, :3]
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing[np.newaxis, :]
    ijk_to_lps[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ ijk_to_lps


def _simpleitk():
    """The SimpleITK module, or None when it is not installed."""
    try:
        import SimpleITK
    except ImportError:
        return None
    return SimpleITK


def _nibabel(path: Path, suffix: str):
    """nibabel, for a NIfTI ``path`` when SimpleITK is missing; a clear ImportError otherwise."""
    if suffix not in (".nii", ".nii.gz"):
        raise ImportError(f"{path}: {suffix} files need SimpleITK (pip install SimpleITK); without it only NIfTI "
                          "files are read and written (through nibabel)")
    try:
        import nibabel
    except ImportError as err:
        raise ImportError("reading and writing volumes needs SimpleITK (pip install SimpleITK) or, for NIfTI "
                          "files only, nibabel") from err
    return nibabel


#: Off-diagonal tolerance of the normalised Gram matrix of a transform's columns for orthogonal voxel axes.
_ORTHOGONAL_TOLERANCE = 1e-4


def _read_nifti_nibabel(path: Path, suffix: str, allow_vector: bool) -> Volume:
    """``read_volume`` through nibabel: the array as stored (scaled by ``scl_slope``/``scl_inter`` if set) and the
    transform ITK takes (the sform where its code is 1 or the qform is unset, else the qform)."""
    nib = _nibabel(path, suffix)
    try:
        image = nib.Nifti1Image.from_filename(str(path))
        data = np.asanyarray(image.dataobj)
    except (OSError, ValueError, EOFError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise VolumeReadError(f"{path}: cannot read the file (truncated or corrupt?): {err}") from err
    header = image.header
    vector = data.ndim == 5 and data.shape[3] == 1 and int(header["intent_code"]) == 1007  # NIFTI_INTENT_VECTOR
    if vector:
        data = data[:, :, :, 0, :]
    elif allow_vector and data.ndim == 4 and data.shape[3] == 3:  # a vector field without the vector intent
        vector = True
    while data.ndim > 3 and data.shape[-1] == 1 and not vector:
        data = data[..., 0]
    if data.ndim != 3 and not (vector and data.ndim == 4):
        size = tuple(int(n) for n in data.shape)
        raise VolumeReadError(
            f"{path}: expected a 3D volume, got a {data.ndim}D image of size {size}"
            + ("; split time series or multi-echo data into 3D files first" if data.ndim == 4 else ""))
    if vector and data.shape[3] > 1 and not allow_vector:
        raise VolumeReadError(f"{path}: expected a scalar volume, got {data.shape[3]} components per voxel")
    if vector and data.shape[3] == 1:
        data = data[..., 0]
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    affine = header.get_sform() if sform_code == 1 or qform_code <= 0 else header.get_qform()
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    if np.max(np.abs(columns.T @ columns - np.eye(3))) > _ORTHOGONAL_TOLERANCE:
        raise VolumeReadError(
            f"{path}: its voxel axes are not orthogonal (a sheared or skewed sform), which ITK cannot "
            "represent; resample it onto an orthogonal grid first (e.g. with FSL flirt -applyxfm or "
            "nibabel.processing.resample_from_to)")
    return Volume(np.ascontiguousarray(data), np.asarray(affine, dtype=float))


def _write_nifti_nibabel(array: np.ndarray, ijk_to_ras: np.ndarray, tmp: Path, path: Path, suffix: str,
                         codes: Tuple[int, int]) -> None:
    """Write a NIfTI-1 file through nibabel as ITK writes it: both transforms from the volume's geometry, units
    mm and s, a vector volume as 5D with intent ``vector``, compressed for ``.nii.gz``."""
    nib = _nibabel(path, suffix)
    vector = array.ndim == 4
    image = nib.Nifti1Image(array[:, :, :, np.newaxis, :] if vector else array, None, dtype=array.dtype)
    image.set_qform(ijk_to_ras, code=int(codes[0]))
    image.set_sform(ijk_to_ras, code=int(codes[1]))
    image.header.set_xyzt_units("mm", "sec")
    if vector:
        image.header.set_intent("vector")
    try:
        nib.save(image, str(tmp))
    except OSError as err:
        raise OSError(f"cannot write {path}: {err}") from err


#: NIfTI datatype codes of floating-point voxels (float32, float64) -> numpy type characters.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti_complete(path: Path, *, reading: bool = True) -> None:
    """Raise if a NIfTI file holds fewer data bytes than its header promises, or (``reading``) has NaN/inf
    voxels or an orientation that tools read differently (see ``_check_nifti_orientation``).

    ITK's NIfTI reader fills missing bytes of a truncated file with zeros without an error, so a partly
    copied or interrupted download would otherwise load as a silently damaged volume; it also turns NaN and
    infinite voxels into 0 (ITK 5.4), so they are counted here, in the file's own bytes.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(348)
            fields = _nifti_fields(header, path)
            dims, datatype, bitpix, vox_offset = fields.dims, fields.datatype, fields.bitpix, fields.vox_offset
            if reading:
                _check_nifti_orientation(fields, path)
            n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(int(dims[0]), 1)]]))
            expected = int(vox_offset) + n_voxels * int(bitpix) // 8
            counter = _NonFiniteCounter(fields.order + _NIFTI_FLOATS[datatype], int(vox_offset), n_voxels) \
                if reading and datatype in _NIFTI_FLOATS else None
            available = len(header)
            if counter is not None:
                counter.feed(header)
            while chunk := handle.read(1 << 22):
                available += len(chunk)
                if counter is not None:
                    counter.feed(chunk)
    except (EOFError, OSError, zlib.error) as err:
        raise VolumeReadError(f"{path}: cannot read the file (truncated or corrupt?): {err}") from err
    if available < expected:
        raise VolumeReadError(f"{path}: truncated NIfTI file: {available} bytes, the header promises {expected}")
    if counter is not None and counter.count:
        raise VolumeReadError(f"{path}: {counter.count} of {n_voxels} voxels are NaN or infinite; expected finite "
                              "values (replace them, e.g. by 0 outside the head, before using the file)")


class _NiftiFields(NamedTuple):
    """The NIfTI-1 header fields this module checks (units as stored: mm for the transforms)."""

    order: str  # struct byte order, "<" or ">"
    dims: Tuple[int, ...]
    datatype: int
    bitpix: int
    vox_offset: float
    pixdim: Tuple[float, ...]
    qform_code: int
    sform_code: int
    quatern: Tuple[float, ...]  # quatern_b, c, d, qoffset_x, y, z
    srow: Tuple[float, ...]  # srow_x, srow_y, srow_z (12 values)


def _nifti_fields(header: bytes, path: Path) -> _NiftiFields:
    """Parse the fields of ``_NiftiFields`` from the first 348 bytes of a NIfTI-1 file.

    NIfTI-2 (a 540-byte header) is refused with its own message: ITK 5.4, and so Slicer, cannot read it.
    """
    if len(header) < 348:
        raise VolumeReadError(f"{path}: truncated NIfTI header ({len(header)} bytes)")
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0]
        if size in (348, 540):
            break
    else:
        raise VolumeReadError(f"{path}: not a NIfTI file (header size field {header[:4]!r})")
    if size == 540:
        raise VolumeReadError(f"{path}: a NIfTI-2 file, which ITK (and Slicer) cannot read; save it as NIfTI-1 "
                              "(e.g. nibabel: nib.save(nib.Nifti1Image.from_image(nib.load(path)), new_path))")
    return _NiftiFields(
        order, struct.unpack(order + "8h", header[40:56]), *struct.unpack(order + "2h", header[70:74]),
        struct.unpack(order + "f", header[108:112])[0], struct.unpack(order + "8f", header[76:108]),
        *struct.unpack(order + "2h", header[252:256]), struct.unpack(order + "6f", header[256:280]),
        struct.unpack(order + "12f", header[280:328]))


def _qform_affine(fields: _NiftiFields) -> np.ndarray:
    """The voxel-to-RAS affine (mm) of the qform: quaternion, qfac and pixdim, as ``nifti1_io`` builds it."""
    b, c, d = fields.quatern[:3]
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:  # a 180-degree rotation: renormalise (b, c, d), a = 0
        norm = 1.0 / np.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b * norm, c * norm, d * norm
    else:
        a = np.sqrt(a)
    rotation = np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    zooms = np.array([z if z > 0 else 1.0 for z in fields.pixdim[1:4]])
    if fields.pixdim[0] < 0:
        zooms[2] = -zooms[2]
    affine = np.eye(4)
    affine[:3, :3] = rotation * zooms[np.newaxis, :]
    affine[:3, 3] = fields.quatern[3:]
    return affine


#: Largest distance (mm) between where the qform and the sform put a corner voxel for them to count as one.
_XFORM_TOLERANCE_MM = 0.1


def _check_nifti_orientation(fields: _NiftiFields, path: Path) -> None:
    """Raise where the file's orientation is unknown or ambiguous, so tools would place the head differently.

    With both ``qform_code`` and ``sform_code`` 0 there is no orientation: ITK assumes one, nibabel another
    (they differ by a flip), and left/right cannot be known.  With both codes set, ITK 5.4 (and so Slicer and
    this package) takes the qform unless ``sform_code`` is 1, while nibabel, FSL and SimNIBS take the sform:
    the two must agree.
    """
    if fields.qform_code <= 0 and fields.sform_code <= 0:
        raise VolumeReadError(
            f"{path}: the file records no orientation (qform_code and sform_code are both 0), so left and right "
            "cannot be known; set the scanner geometry first (e.g. nibabel: img.set_sform(affine, code=1))")
    sform = np.vstack([np.reshape(fields.srow, (3, 4)), [0.0, 0.0, 0.0, 1.0]])
    if fields.sform_code > 0 and (fields.qform_code <= 0 or fields.sform_code == 1):
        # ITK takes the sform's directions but the voxel size from pixdim; nibabel, FSL and SimNIBS the whole sform.
        n_axes = min(max(int(fields.dims[0]), 1), 3)
        sform_mm = np.linalg.norm(sform[:3, :n_axes], axis=0)
        pixdim_mm = np.abs(np.asarray(fields.pixdim[1 : 1 + n_axes], dtype=float))
        columns = sform[:3, :3] / np.maximum(np.linalg.norm(sform[:3, :3], axis=0), 1e-12)
        orthogonal = np.max(np.abs(columns.T @ columns - np.eye(3))) <= _ORTHOGONAL_TOLERANCE  # else refused later
        if orthogonal and np.any(np.abs(sform_mm - pixdim_mm) > 1e-4 * np.maximum(sform_mm, 1e-6)):
            raise VolumeReadError(
                f"{path}: its sform gives voxels of {np.round(sform_mm, 4).tolist()} mm but its pixdim "
                f"{np.round(pixdim_mm, 4).tolist()} mm, and tools differ in which they use (ITK, and so Slicer, "
                "pixdim; nibabel, FSL and SimNIBS the sform), so the head's size is ambiguous.  Make them agree "
                "first (e.g. nibabel: img.header.set_zooms(...) to the sform's voxel size, then save)")
    if fields.qform_code <= 0 or fields.sform_code <= 0:
        return
    n_dims = min(max(int(fields.dims[0]), 1), 3)
    extent = [max(int(n), 1) - 1 for n in fields.dims[1 : 1 + n_dims]] + [0] * (3 - n_dims)
    corners = np.array([[i, j, k, 1.0] for i in (0, extent[0]) for j in (0, extent[1]) for k in (0, extent[2])])
    offset = float(np.max(np.linalg.norm((corners @ (_qform_affine(fields) - sform).T)[:, :3], axis=1)))
    if offset > _XFORM_TOLERANCE_MM:
        raise VolumeReadError(
            f"{path}: its qform and sform place the image up to {offset:.1f} mm apart, and tools differ in which "
            "they use (nibabel, FSL and SimNIBS the sform; ITK, and so Slicer, the qform unless sform_code is 1), "
            "so the head's position is ambiguous.  Make them agree first (e.g. fslorient -copysform2qform, or "
            "nibabel: img.set_qform(img.get_sform()))")


class _NonFiniteCounter:
    """Counts NaN/inf values in a stream of file bytes whose voxel data start at ``offset``."""

    def __init__(self, dtype: str, offset: int, n_values: int) -> None:
        self.dtype = np.dtype(dtype)
        self.skip = offset
        self.left = n_values
        self.pending = b""
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        """Consume the next bytes of the file."""
        if self.skip:
            dropped = min(self.skip, len(chunk))
            chunk, self.skip = chunk[dropped:], self.skip - dropped
        if not chunk or self.left <= 0:
            return
        data = self.pending + chunk
        usable = min(len(data) // self.dtype.itemsize, self.left)
        values = np.frombuffer(data, dtype=self.dtype, count=usable)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.left -= usable
        self.pending = data[usable * self.dtype.itemsize:]


def write_volume(volume: Volume, path: str | os.PathLike, *, overwrite: bool = False,
                 like: str | os.PathLike | None = None) -> Path:
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
    like : str or PathLike, optional
        The input file this volume derives from.  A NIfTI output records the space of a NIfTI ``like``
        (its ``qform_code`` and ``sform_code``, e.g. 4 for MNI152, which FSLeyes' atlas tools need); a code
        ``like`` leaves 0 takes the other one.  Without it, or for other formats, the codes are 1 (scanner).
        The geometry written is always the volume's own.

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
    OSError
        If the file cannot be written completely (disk full, no permission); nothing is left at ``path``
        then (single-file formats are written to a temporary file in the same folder and renamed).
    ImportError
        Without SimpleITK, for a format other than NIfTI (or without nibabel either); nothing is written.
    """
    path = Path(path)
    suffix = _suffix(path)
    existing = [str(part) for part in (path, *_output_data_files(path)) if part.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    codes = _space_codes(Path(like)) if like is not None and suffix in (".nii", ".nii.gz") else None
    sitk = _simpleitk()
    if sitk is None:
        _nibabel(path, suffix)  # a clear error before anything is written
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_through_temporary(path, suffix) as tmp:
            _write_nifti_nibabel(array, volume.ijk_to_ras, tmp, path, suffix, codes or (1, 1))
            _check_written(tmp, path)
        return path
    is_vector = array.ndim == 4
    itk_array = np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))
    image = sitk.GetImageFromArray(itk_array, isVector=is_vector)
    ijk_to_lps = volume.ijk_to_lps
    spacing = volume.spacing
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in ijk_to_lps[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (ijk_to_lps[:3, :3] / spacing[np.newaxis, :]).ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix not in _SINGLE_FILE_SUFFIXES:
        sitk.WriteImage(image, str(path), useCompression=True)
        return path
    with replaced_through_temporary(path, suffix) as tmp:
        if codes in (None, (1, 1)):
            _itk_write(image, tmp, path, compress=True)
        else:
            _write_nifti_with_codes(image, tmp, path, codes)
        if suffix in (".nii", ".nii.gz"):
            _check_written(tmp, path)
    return path


def _check_written(tmp: Path, path: Path) -> None:
    """Raise ``OSError`` if the NIfTI file ``tmp`` (for ``path``) is short: ITK does not report a short write
    (e.g. a full disk)."""
    try:
        _check_nifti_complete(tmp, reading=False)
    except VolumeReadError as err:
        raise OSError(f"cannot write {path} completely (disk full?): {err}") from err


def _itk_write(image, tmp: Path, path: Path, *, compress: bool) -> None:
    """Write ``image`` to ``tmp`` with ITK, naming the destination ``path`` in an error."""
    import SimpleITK as sitk

    try:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    except RuntimeError as err:
        raise OSError(f"cannot write {path}: {str(err).strip().splitlines()[-1]}") from err


def _space_codes(like: Path) -> Tuple[int, int] | None:
    """``(qform_code, sform_code)`` of a NIfTI file, a 0 replaced by the other code; None for other formats."""
    if not like.name.lower().endswith((".nii", ".nii.gz")):
        return None
    opener = gzip.open if like.name.lower().endswith(".gz") else open
    try:
        with opener(like, "rb") as handle:
            fields = _nifti_fields(handle.read(348), like)
    except (EOFError, OSError, zlib.error) as err:
        raise VolumeReadError(f"{like}: cannot read the NIfTI header: {err}") from err
    qform, sform = int(fields.qform_code), int(fields.sform_code)
    return (qform or sform, sform or qform) if qform or sform else None


def _write_nifti_with_codes(image, tmp: Path, path: Path, codes: Tuple[int, int]) -> None:
    """Write ``image`` as NIfTI to ``tmp`` with ``codes`` as (qform_code, sform_code).

    ITK always records 1 (scanner), so the header is written uncompressed, patched in place, then
    compressed here for ``.nii.gz`` (zlib level 6, as ITK's default).
    """
    compressed = tmp.name.lower().endswith(".gz")
    raw = tmp.with_name(tmp.name[:-3]) if compressed else tmp  # ".x.part.nii.gz" -> ".x.part.nii"
    try:
        _itk_write(image, raw, path, compress=False)
        with open(raw, "r+b") as handle:
            order = _nifti_fields(handle.read(348), path).order
            handle.seek(252)
            handle.write(struct.pack(order + "2h", *codes))
        if compressed:
            with open(raw, "rb") as source, gzip.open(tmp, "wb", compresslevel=6) as target:
                shutil.copyfileobj(source, target, 1 << 22)
    finally:
        if compressed:
            raw.unlink(missing_ok=True)


@contextmanager
def replaced_through_temporary(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same ``suffix``); rename it to ``path`` if the block succeeds.

    The temporary file is removed in any case, so a failed write leaves nothing behind.
    """
    tmp = path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.{os.getpid()}.part{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write a text file (a JSON sidecar) through a temporary file, so a failed write leaves nothing behind."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_through_temporary(path) as tmp:
        tmp.write_text(text)
    return path


def check_outputs(paths: Iterable[str | os.PathLike], *, overwrite: bool = False) -> None:
    """Check output paths before long work: none exists (unless ``overwrite``) and each folder is writable.

    Raises
    ------
    FileExistsError
        If an output exists and ``overwrite`` is false.
    NotADirectoryError, PermissionError
        If an output's folder lies below a file, or cannot be created or written (read-only, no permission).
    ValueError
        If a volume's NIfTI or MetaImage suffix is not in lower case (:func:`write_volume` would refuse it).
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.name.lower().endswith(SUPPORTED_SUFFIXES):
            _suffix(path)
    existing = [str(part) for p in paths for part in (p, *_output_data_files(p)) if part.exists()]
    if existing and not overwrite:
        what = "an output exists" if len(existing) == 1 else "outputs exist"
        raise FileExistsError(f"{what}: {', '.join(existing)}; pass --overwrite to replace")
    for folder in dict.fromkeys(p.parent for p in paths):
        ancestor = folder
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise NotADirectoryError(f"cannot write into {folder}: {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write into {folder}: {ancestor} is not writable (read-only or no "
                                  "permission)")


@contextmanager
def removed_on_error() -> Iterator[List[Path]]:
    """Collect the paths a block writes; if the block raises, remove them again (outputs written together).

    >>> with removed_on_error() as written:  # doctest: +SKIP
    ...     written.append(write_volume(volume, "sigma.nii.gz"))
    """
    written: List[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            for part in (Path(path), *_data_files(Path(path))):
                part.unlink(missing_ok=True)
        raise


def _data_files(header: Path) -> List[Path]:
    """The separate data file a ``.mhd`` / ``.nhdr`` header names (``ElementDataFile`` / ``data file``)."""
    if not header.name.lower().endswith((".mhd", ".nhdr")) or not header.is_file():
        return []
    files = []
    for line in header.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=" if header.name.lower().endswith(".mhd") else ":")
        if key.strip().lower() in ("elementdatafile", "data file", "datafile") and value.strip() != "LOCAL":
            files.append(header.parent / value.strip())
    return files


def _output_data_files(header: Path) -> List[Path]:
    """The data file writing a ``.mhd`` / ``.nhdr`` header makes beside it (``stem.zraw`` / ``stem.raw.gz``, as
    :func:`write_volume` writes them compressed), and those an existing header names."""
    name = header.name.lower()
    if name.endswith(".mhd"):
        written = [header.with_name(header.name[: -len(".mhd")] + ".zraw")]
    elif name.endswith(".nhdr"):
        written = [header.with_name(header.name[: -len(".nhdr")] + ".raw.gz")]
    else:
        return []
    return list(dict.fromkeys(written + _data_files(header)))


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
