"""NIfTI geometry checked against nibabel, an independent reader: what we read and write is where nibabel,
FSL and SimNIBS put it, and files whose orientation tools read differently are refused."""
import numpy as np
import pytest

from CondNetLogic import io
from CondNetLogic.errors import VolumeReadError
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.volume import Volume

nib = pytest.importorskip("nibabel")

SHAPE = (9, 7, 5)


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    i, j = [d for d in range(3) if d != axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = np.cos(a)
    r[i, j], r[j, i] = -np.sin(a), np.sin(a)
    return r


def affine(linear: np.ndarray, zooms=(1.2, 0.9, 2.5), origin=(-30.0, 12.5, 41.0)) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = np.asarray(linear) * np.asarray(zooms)[np.newaxis, :]
    out[:3, 3] = origin
    return out


ORIENTATIONS = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "LAS (qfac -1)": np.diag([-1.0, 1.0, 1.0]),
    "PIR": np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]),
    "oblique": rotation(0, 17.0) @ rotation(2, -31.0),
    "oblique, flipped": rotation(1, 48.0) @ np.diag([1.0, 1.0, -1.0]),
    "180 degrees about z": rotation(2, 180.0),
}


def save(path, data, aff, *, qform_code=1, sform_code=1, qform=None, image_class=None, header=None):
    image = (image_class or nib.Nifti1Image)(data, aff, header=header)
    image.set_qform(aff if qform is None else qform, code=qform_code)
    image.set_sform(aff, code=sform_code)
    nib.save(image, str(path))
    return path


def data(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(3).normal(size=SHAPE).astype(dtype)


@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("codes", [(1, 1), (1, 0), (0, 2), (4, 4)])
def test_read_matches_nibabel(tmp_path, name, codes):
    aff = affine(ORIENTATIONS[name])
    path = save(tmp_path / "v.nii.gz", data(), aff, qform_code=codes[0], sform_code=codes[1])
    reference = nib.load(str(path))
    volume = read_volume(path)
    np.testing.assert_allclose(volume.ijk_to_ras, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, np.asarray(reference.dataobj))


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_written_volume_reads_the_same_in_nibabel(tmp_path, name):
    volume = Volume(data(), affine(ORIENTATIONS[name]))
    reference = nib.load(str(write_volume(volume, tmp_path / "out.nii.gz")))
    np.testing.assert_allclose(reference.affine, volume.ijk_to_ras, atol=1e-4)
    np.testing.assert_allclose(reference.header.get_qform(), reference.header.get_sform(), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(reference.dataobj), volume.array)


def test_written_vector_volume_keeps_components_in_nibabel(tmp_path):
    field = np.random.default_rng(4).normal(size=SHAPE + (3,)).astype(np.float32)
    volume = Volume(field, affine(ORIENTATIONS["oblique"]))
    reference = nib.load(str(write_volume(volume, tmp_path / "e.nii.gz")))
    np.testing.assert_allclose(reference.affine, volume.ijk_to_ras, atol=1e-4)
    assert reference.header.get_intent()[0] == "vector"
    np.testing.assert_array_equal(np.asarray(reference.dataobj).reshape(field.shape), field)


def test_big_endian_header_is_parsed(tmp_path):
    aff = affine(ORIENTATIONS["oblique, flipped"])
    big = nib.Nifti1Header(endianness=">")
    path = save(tmp_path / "big.nii.gz", data(">f4"), aff, header=big)
    assert nib.load(str(path)).header.endianness == ">"
    np.testing.assert_allclose(read_volume(path).ijk_to_ras, nib.load(str(path)).affine, atol=1e-4)
    with pytest.raises(VolumeReadError, match="apart"):
        read_volume(save(tmp_path / "big_ambiguous.nii", data(">f4"), aff, qform=affine(np.eye(3)), header=big))


@pytest.mark.parametrize("name", ["two.nii", "two.nii.gz"])
def test_nifti2_gets_a_clear_message(tmp_path, name):
    path = save(tmp_path / name, data(), affine(np.eye(3)), image_class=nib.Nifti2Image)
    with pytest.raises(VolumeReadError, match="NIfTI-2.*Nifti1Image"):
        read_volume(path)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_qform_affine_matches_nibabel(tmp_path, name):
    aff = affine(ORIENTATIONS[name])
    path = save(tmp_path / "q.nii", data(), aff, sform_code=0)
    header_bytes = path.read_bytes()[:348]
    fields = io._nifti_fields(header_bytes, path)
    np.testing.assert_allclose(io._qform_affine(fields), nib.load(str(path)).header.get_qform(), atol=1e-5)


def test_no_orientation_is_refused(tmp_path):
    path = save(tmp_path / "none.nii.gz", data(), affine(np.eye(3)), qform_code=0, sform_code=0)
    with pytest.raises(VolumeReadError, match="no orientation.*left and right"):
        read_volume(path)


def _shifted_qform(path, shift_mm, sform_code=1):
    """(sform, file) of an oblique image whose qform is its sform moved by ``shift_mm`` (RAS mm)."""
    aff = affine(ORIENTATIONS["oblique"])
    moved = aff.copy()
    moved[:3, 3] += shift_mm
    return aff, save(path, data(), aff, qform=moved, qform_code=1, sform_code=sform_code)


def test_disagreeing_qform_and_sform_are_refused(tmp_path):
    aff, path = _shifted_qform(tmp_path / "two_geometries.nii.gz", [0.0, 10.0, 0.0], sform_code=2)
    with pytest.raises(VolumeReadError, match=r"10\.0 mm apart.*nibabel, FSL and SimNIBS the sform"):
        read_volume(path)
    flipped = affine(ORIENTATIONS["LPS"])
    path = save(tmp_path / "flipped.nii.gz", data(), aff, qform=flipped, qform_code=1, sform_code=1)
    with pytest.raises(VolumeReadError, match="qform and sform"):
        read_volume(path)


def test_qform_half_a_millimetre_from_the_sform_is_refused(tmp_path):
    """0.5 mm (a shift of 0.3 and 0.4 mm) is past the 0.1 mm tolerance; 0.05 mm along x is within it."""
    _, path = _shifted_qform(tmp_path / "half.nii.gz", [0.3, 0.4, 0.0])
    with pytest.raises(VolumeReadError, match=r"up to 0\.5 mm apart"):
        read_volume(path)
    aff, path = _shifted_qform(tmp_path / "nudged.nii.gz", [0.05, 0.0, 0.0])
    np.testing.assert_allclose(read_volume(path).ijk_to_ras, aff, atol=1e-4)  # sform_code 1: the sform


def test_qform_and_sform_within_rounding_are_accepted(tmp_path):
    aff = affine(ORIENTATIONS["oblique"])
    nudged = aff.copy()
    nudged[:3, 3] += 0.02  # well below the 0.1 mm tolerance: float32 rounding of converters
    for codes in [(1, 1), (1, 2)]:  # ITK takes the sform, then the qform
        path = save(tmp_path / f"nudged{codes}.nii.gz", data(), aff, qform=nudged, qform_code=codes[0],
                    sform_code=codes[1])
        np.testing.assert_allclose(read_volume(path).ijk_to_ras, nib.load(str(path)).affine, atol=0.05)


def test_sheared_sform_gets_a_clear_message(tmp_path):
    sheared = affine(np.eye(3))
    sheared[0, 1] = 0.3
    path = save(tmp_path / "sheared.nii.gz", data(), sheared, qform_code=0, sform_code=2)
    with pytest.raises(VolumeReadError, match="not orthogonal.*resample"):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(("codes", "expected"), [((4, 4), (4, 4)), ((0, 4), (4, 4)), ((1, 2), (1, 2)),
                                                 ((2, 0), (2, 2)), ((1, 1), (1, 1))])
def test_output_records_the_space_of_its_input(tmp_path, suffix, codes, expected):
    """An E-field of an MNI152 head stays in MNI152 space (sform_code 4), as FSLeyes' atlas tools need."""
    aff = affine(ORIENTATIONS["oblique"])
    source = save(tmp_path / "t1.nii.gz", data(), aff, qform_code=codes[0], sform_code=codes[1])
    field = np.random.default_rng(5).normal(size=SHAPE + (3,)).astype(np.float32)
    for name, volume in [("sigma", Volume(data() * 2, aff)), ("e", Volume(field, aff))]:
        written = nib.load(str(write_volume(volume, tmp_path / f"{name}{suffix}", like=source)))
        assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == expected
        np.testing.assert_allclose(written.affine, aff, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(written.dataobj).reshape(volume.array.shape), volume.array)
        np.testing.assert_allclose(read_volume(tmp_path / f"{name}{suffix}", allow_vector=True).ijk_to_ras, aff,
                                   atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["t1.nii.gz", f"sigma{suffix}", f"e{suffix}"])


def test_output_like_a_non_nifti_input_records_scanner_space(tmp_path):
    volume = Volume(data(), affine(ORIENTATIONS["PIR"]))
    source = write_volume(volume, tmp_path / "t1.nrrd")
    written = nib.load(str(write_volume(volume, tmp_path / "out.nii.gz", like=source)))
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (1, 1)
