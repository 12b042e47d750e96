"""Sampled A-field coils (SimNIBS NIfTI coil files): conventions against independent references, the field of a
sampled figure-8 against its wires, coil files, the CLI and bad input."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from CondNetLogic.cli import main
from CondNetLogic.coil import Coil, coil_pose, list_coils, load_coil
from CondNetLogic.coil_metrics import sphere_metrics
from CondNetLogic.efield import EFieldSimulation
from CondNetLogic.io import write_volume
from CondNetLogic.primary_field import MM_TO_M, PrimaryFieldGrid, dadt_at_points, dadt_centres, dadt_faces
from CondNetLogic.sampled_coil import read_nifti_coil
from CondNetLogic.volume import Volume

#: A grid with unequal spacings, a reversed axis and an offset: node (i, j, k) -> coil-frame mm.
SKEWED_AFFINE = np.array([[3.0, 0.0, 0.0, -60.0], [0.0, -2.0, 0.0, 50.0], [0.0, 0.0, 2.5, -5.0], [0, 0, 0, 1.0]])


def _save(values, affine, path, *, sform_code=2, qform_code=0):
    image = nib.Nifti1Image(np.asarray(values), None)
    image.header.set_sform(affine, code=sform_code)
    image.header.set_qform(affine if qform_code else None, code=qform_code)
    nib.save(image, str(path))
    return path


def _node_positions_mm(shape, affine):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _oblique_pose():
    return coil_pose([5.0, -10.0, 30.0], [0.3, -0.2, -1.0], [0.2, 1.0, 0.1])


def _lattice_volume(shape=(9, 8, 7), spacing=4.0, origin=(-12.0, -20.0, -15.0)):
    angle = np.deg2rad(25.0)
    direction = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    return Volume.from_geometry(np.ones(shape), spacing=(spacing,) * 3, origin=origin, direction=direction)


def _centres_ras_mm(volume):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return volume.ijk_to_ras_points(ijk.astype(float))


#: The file's first two axes swapped (i along -y, j along +x): its affine is not its own transpose's inverse.
PERMUTED_AFFINE = np.array([[0.0, 3.0, 0.0, -60.0], [-2.0, 0.0, 0.0, 50.0], [0.0, 0.0, 2.5, -5.0], [0, 0, 0, 1.0]])


@pytest.mark.parametrize(("affine", "shape"), [(SKEWED_AFFINE, (45, 55, 40)), (PERMUTED_AFFINE, (55, 45, 40))])
def test_a_linear_field_is_reproduced_exactly_for_any_pose_and_grid_affine(tmp_path, affine, shape):
    """Trilinear interpolation is exact for an affine field: A(c) = M c + a in the coil frame (c in mm), so at
    RAS point p, dA/dt = dI/dt R (M R^T (p - t) + a), with the file's own affine, axes and the pose in play."""
    rng = np.random.default_rng(0)
    matrix, offset = rng.normal(scale=1e-8, size=(3, 3)), rng.normal(scale=1e-6, size=3)
    nodes = _node_positions_mm(shape, affine)
    coil = load_coil(_save((nodes @ matrix.T + offset).reshape(shape + (3,)), affine, tmp_path / "lin.nii.gz"))
    pose = _oblique_pose()
    volume = _lattice_volume()
    didt = 7.0e7
    rotation, translation = pose[:3, :3], pose[:3, 3]
    local = (_centres_ras_mm(volume) - translation) @ rotation  # coil frame, mm
    expected = didt * (local @ matrix.T + offset) @ rotation.T
    got = dadt_centres(volume, coil, pose, didt).reshape(-1, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_values_match_simnibs_interpolation_written_out_with_scipy(tmp_path):
    """SimNIBS maps points through inverse(affine) @ inverse(coil_to_ras), interpolates each component with
    scipy's map_coordinates (order 1) and rotates by the pose; the same here on a random field."""
    rng = np.random.default_rng(1)
    values = rng.normal(scale=1e-6, size=(60, 70, 50, 3))
    coil = load_coil(_save(values, SKEWED_AFFINE, tmp_path / "random.nii.gz"))
    pose = _oblique_pose()
    volume = _lattice_volume()
    points = _centres_ras_mm(volume)
    to_index = np.linalg.pinv(SKEWED_AFFINE) @ np.linalg.pinv(pose)
    index = to_index[:3, :3] @ points.T + to_index[:3, 3][:, None]
    assert np.all((index > 0) & (index < np.array(values.shape[:3])[:, None] - 1))  # all inside the grid
    reference = np.stack([ndimage.map_coordinates(values[..., c], index, order=1) for c in range(3)])
    reference = (pose[:3, :3] @ reference).T * 2.0e6  # V/m at dI/dt = 2e6 A/s
    got = dadt_centres(volume, coil, pose, 2.0e6).reshape(-1, 3)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.fixture(scope="module")
def sampled_figure8(tmp_path_factory):
    """The shipped figure-8 written as SimNIBS's coil2nifti writes a coil: A per ampere on a 2 mm grid, float64."""
    wires = load_coil("figure8_70mm")
    affine = np.array([[2.0, 0, 0, -80.0], [0, 2.0, 0, -80.0], [0, 0, 2.0, 2.0], [0, 0, 0, 1.0]])
    shape = (81, 81, 45)
    nodes = _node_positions_mm(shape, affine)
    values = dadt_at_points(nodes * MM_TO_M, wires.segments_mm() * MM_TO_M, 1.0).reshape(shape + (3,))
    return wires, _save(values, affine, tmp_path_factory.mktemp("coil") / "figure8_sampled.nii.gz")


def _sphere(n=21, spacing=3.0, radius=28.0):
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1)
    sigma = np.where(np.linalg.norm((ijk - (n - 1) / 2) * spacing, axis=-1) <= radius, 0.33, 0.0)
    return Volume.from_geometry(sigma, spacing=(spacing,) * 3, origin=(-(n - 1) / 2 * spacing,) * 3)


def _top_pose(radius=28.0, spacing=3.0):
    return coil_pose([0.0, 0.0, radius + spacing / 2], [0.0, 0.0, -1.0], [0.3, 1.0, 0.0])


def test_a_sampled_figure8_gives_the_e_field_of_its_wires(sampled_figure8):
    wires, path = sampled_figure8
    sampled = load_coil(path)
    assert sampled.name == "figure8_sampled"
    assert sampled.didt_max is None
    assert sampled.winding["type"] == "sampled_field"
    simulation = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, primary_field="direct")
    reference = simulation.solve(wires, _top_pose(), 1e8)
    result = simulation.solve(sampled, _top_pose(), 1e8)
    assert result.info["primary_field"] == "sampled"
    peak = reference.e_magnitude.array.max()
    error = np.abs(result.e_vector.array - reference.e_vector.array).max() / peak
    assert error < 0.005  # measured 0.06 % (2 mm grid of A, trilinear)


def test_a_primary_field_grid_written_as_a_nifti_coil_gives_the_same_faces(tmp_path):
    """CondNet's own coil-frame grid (checked against the closed form in test_primary_field.py) as a NIfTI coil file:
    the same trilinear values on every face, through the file's affine instead of the grid's origin and spacing."""
    wires = load_coil("figure8_70mm")
    grid = PrimaryFieldGrid(wires, spacing_mm=5.0, half_width_mm=60.0, depth_mm=80.0)  # covers the ball
    affine = np.diag([grid.spacing_m / MM_TO_M] * 3 + [1.0])
    affine[:3, 3] = grid.origin_m / MM_TO_M
    sampled = load_coil(_save(grid.values.astype(np.float64), affine, tmp_path / "grid.nii.gz"))
    volume = _sphere()
    mask = volume.array > 0
    expected = dadt_faces(volume, wires, _top_pose(), 1e8, mask=mask, grid=grid)
    for got, want in zip(dadt_faces(volume, sampled, _top_pose(), 1e8, mask=mask), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_the_coil_centre_inside_the_head_raises(sampled_figure8):
    _, path = sampled_figure8
    simulation = EFieldSimulation(_sphere(), device="cpu")
    pose = coil_pose([0.0, 0.0, 10.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="coil centre lies in the head"):
        simulation.solve(load_coil(path), pose, 1e8)


def test_points_outside_the_grid_get_zero_with_a_warning(tmp_path, caplog):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # nodes at x, y, z = 0..18 mm: the head mostly lies outside
    coil = load_coil(_save(np.full((10, 10, 10, 3), 1e-6), affine, tmp_path / "small.nii.gz"))
    volume = _lattice_volume()
    pose = np.eye(4)
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.primary_field"):
        field = dadt_centres(volume, coil, pose, 1.0)
    inside = np.all((_centres_ras_mm(volume) >= 0) & (_centres_ras_mm(volume) <= 18), axis=1)
    assert 0 < inside.sum() < inside.size
    np.testing.assert_allclose(field.reshape(-1, 3)[inside], 1e-6)
    assert not field.reshape(-1, 3)[~inside].any()
    assert f"{(~inside).sum()} of {inside.size} voxel centres" in caplog.text
    assert "taken as 0" in caplog.text


def test_a_sampled_coils_dictionary_rebuilds_it_from_any_working_folder(sampled_figure8, tmp_path, monkeypatch):
    _, path = sampled_figure8
    monkeypatch.chdir(path.parent)
    coil = load_coil(path.name)  # found relative to the working folder
    monkeypatch.chdir(tmp_path)
    again = Coil.from_dict(coil.to_dict())
    assert again.sha256 == coil.sha256
    assert again.sampled.path.resolve() == path.resolve()


def test_a_coil_json_file_names_the_nifti_file_and_adds_the_maximum_didt(sampled_figure8, tmp_path):
    _, path = sampled_figure8
    coil = load_coil(path)
    folder = tmp_path / "wrapped"
    folder.mkdir()
    wrapper = coil.to_file(folder / "magstim.json")
    data = json.loads(wrapper.read_text())
    assert not Path(data["winding"]["file"]).is_absolute()  # relative to the JSON file's folder
    assert (folder / data["winding"]["file"]).resolve() == path.resolve()
    assert Coil.from_file(wrapper).sha256 == coil.sha256
    assert Coil.from_dict(coil.to_dict(), base_dir=path.parent).sha256 == coil.sha256
    data.update(name="magstim", didt_max_a_per_s=1.4e8)
    wrapper.write_text(json.dumps(data))
    wrapped = load_coil(wrapper)
    assert wrapped.didt_max == 1.4e8
    assert wrapped.sampled.sha256 == coil.sampled.sha256
    np.testing.assert_array_equal(wrapped.sampled.values, coil.sampled.values)


def test_a_replaced_nifti_file_is_read_again_or_refused(tmp_path):
    nifti = _save(np.full((4, 4, 4, 3), 1e-6), np.eye(4), tmp_path / "grid.nii.gz")
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps({"format_version": 1, "name": "loose",
                                 "winding": {"type": "sampled_field", "file": "grid.nii.gz"}}))
    pinned = load_coil(nifti).to_file(tmp_path / "pinned.json")  # records values_sha256
    assert load_coil(loose).sampled.values.max() == pytest.approx(1e-6)
    load_coil(pinned)
    _save(np.full((4, 4, 4, 3), 2e-6, dtype=np.float32), np.eye(4), nifti)
    assert load_coil(loose).sampled.values.max() == pytest.approx(2e-6)  # the cached coil is not reused
    with pytest.raises(ValueError, match="replaced or edited"):
        load_coil(pinned)


def test_nifti_coils_in_the_user_folder_are_known_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDNET_COIL_DIR", str(tmp_path))
    _save(np.full((4, 4, 4, 3), 1e-6), np.eye(4), tmp_path / "My_Coil.nii.gz")
    _save(np.full((4, 4, 4, 3), 1e-6), np.eye(4), tmp_path / "other.nii")
    assert {"My_Coil", "other"} <= set(list_coils())
    assert load_coil("My_Coil").sampled.shape == (4, 4, 4)
    assert load_coil("other").name == "other"


def test_the_grid_options_refuse_a_sampled_coil(sampled_figure8, tmp_path):
    _, path = sampled_figure8
    coil = load_coil(path)
    with pytest.raises(ValueError, match="sampled on a grid already"):
        PrimaryFieldGrid(coil)
    with pytest.raises(ValueError, match="sampled on a grid already"):
        PrimaryFieldGrid.load(tmp_path / "none.npz", coil)
    with pytest.raises(ValueError, match="sampled A-field"):
        sphere_metrics(coil)


def _bad_files(tmp_path):
    eye = np.eye(4)
    good = np.full((4, 4, 4, 3), 1e-6)
    nan = good.copy()
    nan[1, 2, 3, 0] = np.nan
    truncated = tmp_path / "truncated.nii.gz"
    _save(np.random.default_rng(2).normal(size=(20, 20, 20, 3)), eye, truncated)
    truncated.write_bytes(gzip.compress(gzip.decompress(truncated.read_bytes())[:-5000]))
    return {
        "scalar": (_save(good[..., 0], eye, tmp_path / "scalar.nii.gz"), "4D volume"),
        "four components": (_save(np.full((4, 4, 4, 4), 1e-6), eye, tmp_path / "four.nii.gz"), "4D volume"),
        "one node thick": (_save(np.full((4, 1, 4, 3), 1e-6), eye, tmp_path / "thin.nii.gz"), "at least 2"),
        "nan": (_save(nan, eye, tmp_path / "nan.nii.gz"), "1 of 192 A-field values are NaN"),
        "zero": (_save(np.zeros((4, 4, 4, 3)), eye, tmp_path / "zero.nii.gz"), "zero everywhere"),
        "no transform": (_save(good, eye, tmp_path / "codes.nii.gz", sform_code=0, qform_code=0), "codes are 0"),
        "singular": (_save(good, np.diag([1.0, 0.0, 1.0, 1.0]), tmp_path / "singular.nii.gz"), "singular"),
        "truncated": (truncated, "truncated"),
    }


@pytest.mark.parametrize("case", ["scalar", "four components", "one node thick", "nan", "zero", "no transform",
                                  "singular", "truncated"])
def test_bad_nifti_coil_files_raise(tmp_path, case):
    path, match = _bad_files(tmp_path)[case]
    with pytest.raises(ValueError, match=match):
        load_coil(path)


def test_missing_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_nifti_coil(tmp_path / "absent.nii.gz")
    (tmp_path / "coil.json").write_text(json.dumps({"format_version": 1, "name": "x",
                                                    "winding": {"type": "sampled_field", "file": "absent.nii.gz"}}))
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        load_coil(tmp_path / "coil.json")
    (tmp_path / "text.json").write_text(json.dumps({"format_version": 1, "name": "x",
                                                    "winding": {"type": "sampled_field", "file": "coil.json"}}))
    with pytest.raises(ValueError, match="not a NIfTI file"):
        load_coil(tmp_path / "text.json")


def test_values_far_above_a_coils_a_per_ampere_are_reported(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.sampled_coil"):
        load_coil(_save(np.full((4, 4, 4, 3), 50.0), np.eye(4), tmp_path / "didt.nii.gz"))
    assert "dA/dt at some dI/dt" in caplog.text


def test_info_describes_the_grid_and_refuses_the_sphere(sampled_figure8, capsys):
    _, path = sampled_figure8
    assert main(["info", "--coil", str(path)]) == 0
    out = capsys.readouterr().out
    assert "81 x 81 x 45 nodes of 2 x 2 x 2 mm" in out
    assert "x -80.0 to 80.0, y -80.0 to 80.0, z 2.0 to 90.0 mm" in out
    assert "condnet efield needs --didt" in out
    assert main(["info", "--coil", str(path), "--sphere"]) != 0
    assert "sampled A-field" in capsys.readouterr().err


def test_cli_efield_with_a_nifti_coil(sampled_figure8, tmp_path, capsys):
    _, path = sampled_figure8
    sigma = tmp_path / "sigma.nii.gz"
    write_volume(_sphere(), sigma)
    base = ["efield", "--conductivity", str(sigma), "--device", "cpu", "--coil", str(path),
            "--coil-center", "0", "0", "29.5", "--coil-direction", "0", "1", "0"]
    assert main([*base, "--out", str(tmp_path / "no_didt")]) != 0
    assert "--didt" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "run"), "--didt", "1e8"]) == 0
    summary = json.loads((tmp_path / "run" / "efield.json").read_text())
    assert summary["coil"]["name"] == "figure8_sampled"
    assert summary["solver"]["primary_field"] == "sampled"
    assert main([*base, "--out", str(tmp_path / "grid"), "--didt", "1e8", "--grid", str(tmp_path / "g.npz")]) != 0
    assert "sampled on a grid already" in capsys.readouterr().err
