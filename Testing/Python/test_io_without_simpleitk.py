"""NIfTI through nibabel where SimpleITK is missing: the same volumes and headers as the SimpleITK path."""
import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from CondNetLogic import io
from CondNetLogic.errors import VolumeReadError
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.volume import Volume, affine_from_geometry

nib = pytest.importorskip("nibabel")

#: Header fields both paths must write alike (the transforms are compared as affines).
HEADER_FIELDS = ("dim", "datatype", "bitpix", "qform_code", "sform_code", "intent_code", "xyzt_units")


def oblique_volume(dtype=np.float32, components: int = 1, flip: bool = False) -> Volume:
    rng = np.random.default_rng(3)
    shape = (7, 5, 4) if components == 1 else (7, 5, 4, components)
    a = np.deg2rad(-17.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    axes = np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]], dtype=float) if flip else np.eye(3)  # flip: left-handed
    if flip:
        axes[:, 2] *= -1
    affine = affine_from_geometry([1.1, 0.8, 2.0], [-30.5, 12.0, 44.0], rotation @ axes)
    values = rng.normal(size=shape) * 100
    return Volume(values.astype(dtype), affine)


@pytest.fixture
def without_simpleitk(monkeypatch):
    monkeypatch.setattr(io, "_simpleitk", lambda: None)


VOLUMES = [
    pytest.param(dict(dtype=np.float32), id="float32"),
    pytest.param(dict(dtype=np.int16, flip=True), id="int16-left-handed"),
    pytest.param(dict(dtype=np.uint8), id="uint8"),
    pytest.param(dict(dtype=np.int64), id="int64"),
    pytest.param(dict(dtype=np.float64, flip=True), id="float64-left-handed"),
    pytest.param(dict(dtype=np.float32, components=3), id="vector"),
]


def _header(path):
    return nib.load(str(path)).header


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("options", VOLUMES)
def test_both_paths_read_and_write_the_same_files(tmp_path, monkeypatch, suffix, options):
    volume = oblique_volume(**options)
    vector = volume.array.ndim == 4
    itk_file = write_volume(volume, tmp_path / f"itk{suffix}")
    monkeypatch.setattr(io, "_simpleitk", lambda: None)
    nib_file = write_volume(volume, tmp_path / f"nib{suffix}")
    for path in (itk_file, nib_file):  # nibabel reads what both wrote
        back = read_volume(path, allow_vector=vector)
        assert back.array.dtype == volume.array.dtype
        np.testing.assert_array_equal(back.array, volume.array)
        np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)
    monkeypatch.undo()
    back = read_volume(nib_file, allow_vector=vector)  # and SimpleITK reads what nibabel wrote
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)
    ours, theirs = _header(nib_file), _header(itk_file)
    for field in HEADER_FIELDS:
        np.testing.assert_array_equal(ours[field], theirs[field], err_msg=field)
    np.testing.assert_allclose(ours.get_qform(), theirs.get_qform(), atol=1e-5)
    np.testing.assert_allclose(ours.get_sform(), theirs.get_sform(), atol=1e-5)


@pytest.mark.parametrize("codes", [(4, 4), (1, 2)])
def test_space_codes_of_a_like_file(tmp_path, without_simpleitk, codes):
    """The ``like`` file's qform and sform codes (MNI 4/4; scanner 1 and aligned 2) each stay in their own field."""
    volume = oblique_volume()
    like = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), volume.ijk_to_ras)
    like.set_qform(volume.ijk_to_ras, code=codes[0])
    like.set_sform(volume.ijk_to_ras, code=codes[1])
    nib.save(like, str(tmp_path / "like.nii.gz"))
    header = _header(write_volume(volume, tmp_path / "out.nii.gz", like=tmp_path / "like.nii.gz"))
    assert (int(header["qform_code"]), int(header["sform_code"])) == codes


def test_the_transform_itk_takes(tmp_path, monkeypatch):
    """With both codes set and sform_code 2 ITK takes the qform, with sform_code 1 the sform (the two agree within
    0.1 mm, or the file is refused); the nibabel path takes the same."""
    volume = oblique_volume()
    shifted = volume.ijk_to_ras.copy()
    shifted[:3, 3] += 0.05  # within the 0.1 mm that counts as agreeing
    for qform_code, sform_code, expected in ((1, 2, volume.ijk_to_ras), (1, 1, shifted), (0, 2, shifted)):
        image = nib.Nifti1Image(volume.array, None)
        image.set_qform(volume.ijk_to_ras, code=qform_code)
        image.set_sform(shifted, code=sform_code)
        path = tmp_path / f"q{qform_code}s{sform_code}.nii.gz"
        nib.save(image, str(path))
        np.testing.assert_allclose(read_volume(path).ijk_to_ras, expected, atol=1e-5)  # SimpleITK
        with monkeypatch.context() as patch:
            patch.setattr(io, "_simpleitk", lambda: None)
            np.testing.assert_allclose(read_volume(path).ijk_to_ras, expected, atol=1e-5)


def test_bad_files_give_the_same_errors(tmp_path, without_simpleitk):
    volume = oblique_volume(components=3)
    path = write_volume(volume, tmp_path / "e.nii.gz")
    with pytest.raises(VolumeReadError, match="3 components"):
        read_volume(path)
    series = nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4))
    nib.save(series, str(tmp_path / "fmri.nii.gz"))
    with pytest.raises(VolumeReadError, match="4D"):
        read_volume(tmp_path / "fmri.nii.gz")
    raw = gzip.decompress((tmp_path / "e.nii.gz").read_bytes())
    (tmp_path / "short.nii").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(VolumeReadError, match="truncated"):
        read_volume(tmp_path / "short.nii")
    sheared = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    shear = np.eye(4)
    shear[0, 1] = 0.3
    sheared.set_sform(shear, code=1)
    nib.save(sheared, str(tmp_path / "sheared.nii.gz"))
    with pytest.raises(VolumeReadError, match="not orthogonal"):
        read_volume(tmp_path / "sheared.nii.gz")
    with pytest.raises(FileExistsError):
        write_volume(volume, path)


def test_other_formats_need_simpleitk(tmp_path, without_simpleitk):
    volume = oblique_volume()
    with pytest.raises(ImportError, match="need SimpleITK"):
        write_volume(volume, tmp_path / "v.nrrd")
    assert not list(tmp_path.iterdir())
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32)), str(tmp_path / "v.mha"))
    with pytest.raises(ImportError, match="need SimpleITK"):
        read_volume(tmp_path / "v.mha")


def test_without_either_library_the_error_says_what_to_install(tmp_path, without_simpleitk, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nibabel(name, *args, **kwargs):
        if name == "nibabel":
            raise ImportError("No module named 'nibabel'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nibabel)
    with pytest.raises(ImportError, match="pip install SimpleITK"):
        write_volume(oblique_volume(), tmp_path / "v.nii.gz")
    assert not list(tmp_path.iterdir())
