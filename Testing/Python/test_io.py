"""Volume IO keeps geometry for every format; bad files give clear errors."""
import gzip
import os

import numpy as np
import pytest
import SimpleITK as sitk

from CondNetLogic.errors import VolumeReadError
from CondNetLogic.io import check_finite, check_outputs, read_volume, removed_on_error, write_text, write_volume
from CondNetLogic.volume import Volume, affine_from_geometry

SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]


def make_volume(components: int = 1, dtype=np.float32) -> Volume:
    rng = np.random.default_rng(1)
    shape = (7, 5, 4) if components == 1 else (7, 5, 4, components)
    a = np.deg2rad(25.0)
    rotation = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    lia = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
    affine = affine_from_geometry([0.9, 1.3, 2.5], [12.5, -40.0, 31.0], rotation @ lia)
    return Volume(rng.normal(size=shape).astype(dtype), affine)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_scalar_roundtrip_keeps_geometry(tmp_path, suffix):
    vol = make_volume()
    path = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-5)
    assert back.array.dtype == np.float32


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_vector_roundtrip_keeps_components_and_geometry(tmp_path, suffix):
    vol = make_volume(components=3)
    back = read_volume(write_volume(vol, tmp_path / f"e{suffix}"), allow_vector=True)
    assert back.array.shape == vol.array.shape
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-5)
    with pytest.raises(VolumeReadError, match="3 components"):
        read_volume(tmp_path / f"e{suffix}")


@pytest.mark.parametrize("reader", ["itk", "nibabel"])
def test_a_4d_nifti_with_three_frames_is_a_vector_field_where_one_is_expected(tmp_path, monkeypatch, reader):
    """nibabel's Nifti1Image(field, affine) of an (I, J, K, 3) field (no vector intent, as SimNIBS writes E)."""
    import nibabel as nib

    from CondNetLogic import io

    if reader == "nibabel":
        monkeypatch.setattr(io, "_simpleitk", lambda: None)
    vol = make_volume(components=3)
    path = tmp_path / "e4d.nii.gz"
    nib.save(nib.Nifti1Image(vol.array, vol.ijk_to_ras), str(path))
    back = read_volume(path, allow_vector=True)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-5)
    with pytest.raises(VolumeReadError, match="4D image"):  # where a scalar volume is expected: a time series
        read_volume(path)


def test_itk_lps_convention_matches_nifti_header(tmp_path):
    """Voxel (i, j, k) in our array is the voxel SimpleITK places at TransformIndexToPhysicalPoint, in LPS."""
    vol = make_volume()
    path = write_volume(vol, tmp_path / "v.nii.gz")
    image = sitk.ReadImage(str(path))
    for ijk in [(0, 0, 0), (6, 1, 3), (2, 4, 1)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = vol.ijk_to_ras_points(np.array(ijk, dtype=float))
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)
        assert image[ijk] == pytest.approx(float(vol.array[ijk]))


def test_write_refuses_to_overwrite(tmp_path):
    vol = make_volume()
    path = write_volume(vol, tmp_path / "v.nii.gz")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_volume(vol.with_array(vol.array * 2), path)
    assert path.read_bytes() == before
    write_volume(vol.with_array(vol.array * 2), path, overwrite=True)
    np.testing.assert_array_equal(read_volume(path).array, vol.array * 2)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_volume(make_volume(), tmp_path / "v.nii")
    data = path.read_bytes()
    broken = tmp_path / "broken.nii"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="broken.nii"):
        read_volume(broken)
    gz = tmp_path / "broken.nii.gz"
    gz.write_bytes(gzip.compress(data)[:200])
    with pytest.raises(VolumeReadError, match="broken.nii.gz"):
        read_volume(gz)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_or_inf_in_a_nifti_file_is_an_error_not_zero(tmp_path, suffix, dtype):
    # ITK's NIfTI reader turns NaN and inf into 0; the raw bytes are checked instead.
    array = np.ones((6, 5, 40), dtype=dtype)  # the data start inside the 540-byte header read (float64: mid-value)
    array[1, 2, 3] = np.nan
    array[5, 4, 39] = -np.inf
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(VolumeReadError, match="2 of 1200 voxels are NaN or infinite"):
        read_volume(path)
    sitk.WriteImage(sitk.GetImageFromArray(np.nan_to_num(array, posinf=0, neginf=0)), str(path))
    assert read_volume(path).shape == (40, 5, 6)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(VolumeReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    with pytest.raises(ValueError, match="unsupported"):
        read_volume(tmp_path / "x.png")


@pytest.mark.parametrize("name", ["user.MHD", "user.Mha", "scan.NII.GZ", "scan.Nii"])
def test_upper_case_nifti_and_metaimage_names_are_refused_and_nothing_is_replaced(tmp_path, name):
    # ITK writes out.MHD as out.mhd + a data file (over a user's out.mhd) and cannot read or write X.NII.GZ.
    kept = tmp_path / name.lower()
    write_volume(make_volume(), kept)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    target = tmp_path / name
    for call in (lambda: write_volume(make_volume(), target, overwrite=True), lambda: read_volume(target),
                 lambda: check_outputs([target])):
        with pytest.raises(ValueError, match="lower case"):
            call()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_upper_case_nrrd_names_work(tmp_path):
    # ITK recognises NRRD in any case, so these are not refused.
    volume = make_volume()
    for name in ("a.NRRD", "b.NHDR"):
        path = write_volume(volume, tmp_path / name)
        assert path.exists()
        assert np.array_equal(read_volume(path).array, volume.array)


def test_4d_volume_is_rejected(tmp_path):
    frames = [sitk.GetImageFromArray(np.full((3, 4, 5), t, dtype=np.float32)) for t in range(2)]
    image = sitk.JoinSeries(frames)
    assert image.GetDimension() == 4
    path = tmp_path / "fmri.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(VolumeReadError, match="4D"):
        read_volume(path)


def test_check_finite_names_the_volume():
    vol = make_volume()
    array = vol.array.copy()
    array[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="T1: 1 voxels"):
        check_finite(vol.with_array(array), name="T1")
    check_finite(vol, name="T1")


def test_a_short_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import CondNetLogic.io as io

    def disk_full(path, **kwargs):
        raise VolumeReadError(f"{path}: truncated NIfTI file: 100 bytes, the header promises 4000")

    monkeypatch.setattr(io, "_check_nifti_complete", disk_full)
    with pytest.raises(OSError, match="cannot write .*v.nii.gz completely"):
        write_volume(make_volume(), tmp_path / "v.nii.gz")
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary file


def test_check_outputs_before_the_work(tmp_path):
    (tmp_path / "old.nii.gz").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="an output exists: .*old.nii.gz; pass --overwrite"):
        check_outputs([tmp_path / "old.nii.gz", tmp_path / "new.nii.gz"])
    check_outputs([tmp_path / "old.nii.gz"], overwrite=True)
    check_outputs([tmp_path / "not" / "yet" / "there.nii.gz"])  # folders are created when writing
    with pytest.raises(NotADirectoryError, match="old.nii.gz is a file, not a folder"):
        check_outputs([tmp_path / "old.nii.gz" / "x.nii.gz"])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_check_outputs_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            check_outputs([folder / "sub" / "x.nii.gz"])
    finally:
        folder.chmod(0o755)


def test_outputs_written_together_are_removed_on_error(tmp_path):
    kept = write_text(tmp_path / "earlier.json", "{}")

    def write_two_then_fail():
        with removed_on_error() as written:
            written.append(write_volume(make_volume(), tmp_path / "a.nii.gz"))
            written.append(write_text(tmp_path / "a.json", "{}"))
            raise RuntimeError("solver failed")

    with pytest.raises(RuntimeError, match="solver failed"):
        write_two_then_fail()
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    with pytest.raises(FileExistsError):
        write_text(kept, "{}")


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_two_file_outputs_are_removed_whole_on_error(tmp_path, suffix):
    def write_then_fail():
        with removed_on_error() as written:
            written.append(write_volume(make_volume(), tmp_path / f"sigma{suffix}"))
            assert len(list(tmp_path.iterdir())) == 2  # header and data file
            raise RuntimeError("later step failed")

    with pytest.raises(RuntimeError, match="later step failed"):
        write_then_fail()
    assert list(tmp_path.iterdir()) == []


def test_nan_volumes_are_still_written(tmp_path):
    volume = make_volume()
    array = volume.array.copy()
    array[0, 0, 0] = np.nan
    path = write_volume(volume.with_array(array), tmp_path / "nan.nii.gz")  # the truncation check ignores NaN
    with pytest.raises(VolumeReadError, match="1 of 140 voxels are NaN"):
        read_volume(path)


@pytest.mark.parametrize("code", [1, 2])
def test_nifti_whose_sform_and_pixdim_disagree_is_refused(tmp_path, code):
    """ITK takes the voxel size from pixdim, nibabel/FSL/SimNIBS from the sform: an ambiguous size is an error."""
    nib = pytest.importorskip("nibabel")
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.diag([0.9, 0.9, 1.5, 1.0]))
    image.set_qform(None, code=0)
    image.set_sform(np.diag([0.9, 0.9, 1.5, 1.0]), code=code)
    image.header["pixdim"][1:4] = 1.0
    path = tmp_path / "pixdim.nii"
    nib.save(image, path)
    with pytest.raises(VolumeReadError, match=r"sform gives voxels of \[0.9, 0.9, 1.5\] mm but its pixdim"):
        read_volume(path)
    image.header.set_zooms((0.9, 0.9, 1.5))  # made to agree: read with the sform's geometry
    nib.save(image, path)
    np.testing.assert_allclose(read_volume(path).spacing, [0.9, 0.9, 1.5], rtol=1e-6)


def test_sform_and_pixdim_are_compared_when_the_qform_is_set_too(tmp_path):
    """With both codes 1 ITK still takes pixdim's voxel size: the pixdim check must not need qform_code 0."""
    nib = pytest.importorskip("nibabel")
    sform = np.diag([0.9, 0.9, 1.5, 1.0])
    image = nib.Nifti1Image(np.zeros((6, 5, 1), np.int16), sform)
    image.set_qform(sform, code=1)
    image.set_sform(sform, code=1)
    path = tmp_path / "pixdim.nii"
    nib.save(image, path)
    raw = bytearray(path.read_bytes())
    raw[88:92] = np.float32(1.0).tobytes()  # pixdim[3] (bytes 76 + 4 * 3), little-endian as nibabel wrote it
    path.write_bytes(bytes(raw))
    assert nib.load(path).header["pixdim"][3] == 1.0  # one slice: the qform (pixdim 1) still meets the sform
    with pytest.raises(VolumeReadError, match=r"sform gives voxels of \[0.9, 0.9, 1.5\] mm but its pixdim "
                                              r"\[0.9, 0.9, 1.0\] mm"):
        read_volume(path)


def test_a_nifti_one_voxel_short_is_truncated(tmp_path):
    """Losing only the last float32 voxel (4 bytes) is caught: 352 + 7 * 5 * 4 * 4 = 912 bytes promised."""
    data = write_volume(make_volume(), tmp_path / "v.nii").read_bytes()
    assert len(data) == 912
    short = tmp_path / "short.nii"
    short.write_bytes(data[:-4])
    with pytest.raises(VolumeReadError, match="truncated NIfTI file: 908 bytes, the header promises 912"):
        read_volume(short)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_infinite_voxels_are_refused_in_every_format(tmp_path, suffix):
    volume = make_volume()
    array = volume.array.astype(np.float32)
    array[1, 2, 3] = np.inf
    path = write_volume(volume.with_array(array), tmp_path / f"inf{suffix}")
    with pytest.raises(VolumeReadError, match="1 of 140 voxel values are NaN or infinite"):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_complex_voxels_are_refused(tmp_path, suffix):
    path = tmp_path / f"complex{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.complex64)), str(path))
    with pytest.raises(VolumeReadError, match="complex numbers"):
        read_volume(path)


@pytest.mark.parametrize(("suffix", "data"), [(".mhd", "sigma.zraw"), (".nhdr", "sigma.raw.gz")])
def test_two_file_outputs_never_replace_a_data_file_of_that_name(tmp_path, suffix, data):
    kept = tmp_path / data
    kept.write_text("precious")
    with pytest.raises(FileExistsError, match=data):
        check_outputs([tmp_path / f"sigma{suffix}"])
    with pytest.raises(FileExistsError, match=data):
        write_volume(make_volume(), tmp_path / f"sigma{suffix}")
    assert kept.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [data]
