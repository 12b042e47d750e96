"""E-field API and ``condnet efield``: validation, geometry (any orientation), reuse, outputs, errors."""
from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.coil import coil_pose, load_coil
from CondNetLogic.dosing import read_region_field
from CondNetLogic.efield import EFieldResult, EFieldSimulation
from CondNetLogic.errors import Cancelled
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.metrics import spherical_roi
from CondNetLogic.primary_field import PrimaryFieldGrid
from CondNetLogic.volume import Volume
from _condnet_data import nifti_space, set_nifti_space

RADIUS_MM = 30.0
SPACING_MM = 3.0
LIA = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _sphere(direction=None, *, center=(2.0, -3.0, 1.0), radius=RADIUS_MM, spacing=SPACING_MM, n=25):
    """A sphere of 0.33 S/m on an ``n^3`` grid whose centre voxel sits at ``center`` (RAS mm)."""
    direction = np.eye(3) if direction is None else direction
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1)
    offset = (ijk - (n - 1) / 2) * spacing
    sigma = np.where(np.linalg.norm(offset, axis=-1) <= radius, 0.33, 0.0)
    origin = np.asarray(center) - direction @ np.full(3, (n - 1) / 2 * spacing)
    return Volume.from_geometry(sigma, spacing=(spacing,) * 3, origin=origin, direction=direction)


def _top_pose(center=(2.0, -3.0, 1.0), handle=(0.0, 1.0, 0.0)):
    scalp = np.asarray(center) + [0.0, 0.0, RADIUS_MM + SPACING_MM / 2]
    return coil_pose(scalp, [0.0, 0.0, -1.0], handle)


@pytest.fixture(scope="module")
def coil():
    return load_coil("figure8_70mm")


@pytest.fixture(scope="module")
def ras_result(coil):
    simulation = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, primary_field="direct")
    return simulation, simulation.solve(coil, _top_pose(), 1e8)


def test_result_is_on_the_input_grid(ras_result):
    simulation, result = ras_result
    assert isinstance(result, EFieldResult)
    volume = simulation.conductivity
    assert result.e_vector.array.shape == volume.shape + (3,)
    assert result.e_vector.array.dtype == np.float32
    assert result.e_magnitude.array.dtype == np.float32
    np.testing.assert_array_equal(result.e_vector.ijk_to_ras, volume.ijk_to_ras)
    np.testing.assert_array_equal(result.e_magnitude.ijk_to_ras, volume.ijk_to_ras)
    np.testing.assert_allclose(result.e_magnitude.array, np.linalg.norm(result.e_vector.array, axis=-1), rtol=1e-6)
    assert np.all(result.e_vector.array[volume.array == 0] == 0)
    assert np.all(result.e_magnitude.array[volume.array > 0] > 0)


def test_info_records_the_run(ras_result, coil):
    _, result = ras_result
    info = result.info
    assert info["converged"]
    assert info["residual"] <= 1e-8
    assert info["iterations"] > 0
    assert info["coil_name"] == coil.name
    assert info["coil_sha256"] == coil.sha256
    np.testing.assert_allclose(info["coil_to_ras"], _top_pose())
    assert info["didt"] == 1e8
    assert info["tol"] == 1e-8
    assert info["device"] == "cpu"
    assert info["primary_field"] == "direct"
    assert set(info["timings"]) == {"setup", "primary_field", "solve", "total"}
    json.dumps(info)


def test_field_under_the_coil_points_along_the_handle(ras_result):
    simulation, result = ras_result
    top = simulation.conductivity.ras_to_ijk_points(np.array([2.0, -3.0, 1.0 + RADIUS_MM - 6.0]))
    e = result.e_vector.array[tuple(np.rint(top).astype(int))]
    assert e[1] > 0.95 * np.linalg.norm(e)


@pytest.mark.parametrize("direction", [LIA, np.diag([-1.0, 1.0, 1.0])], ids=["LIA", "LAS"])
def test_any_orientation_gives_the_same_ras_field(ras_result, coil, direction):
    simulation, reference = ras_result
    volume = _sphere(direction)
    result = EFieldSimulation(volume, device="cpu", tol=1e-8, primary_field="direct").solve(coil, _top_pose(), 1e8)
    # same voxel centres in RAS, only listed in another order: compare the fields at the same points
    ijk = np.argwhere(volume.array > 0)
    ras = volume.ijk_to_ras_points(ijk)
    reference_ijk = np.rint(simulation.conductivity.ras_to_ijk_points(ras)).astype(int)
    np.testing.assert_allclose(
        result.e_vector.array[tuple(ijk.T)], reference.e_vector.array[tuple(reference_ijk.T)], rtol=1e-4, atol=1e-3
    )


def test_solver_is_reused_for_each_coil_position(coil):
    simulation = EFieldSimulation(_sphere(), device="cpu", tol=1e-6, primary_field="direct")
    solver = simulation.solver
    first = simulation.solve(coil, _top_pose(), 1e8)
    second = simulation.solve(coil, _top_pose(handle=(1.0, 0.0, 0.0)), 1e8)
    assert simulation.solver is solver
    # rotating the handle by 90 degrees about the sphere's axis rotates the field
    e1 = first.e_vector.array[12, 12, 20]
    e2 = second.e_vector.array[12, 12, 20]
    assert e1[1] > 0.9 * np.linalg.norm(e1)
    assert e2[0] > 0.9 * np.linalg.norm(e2)


def test_warm_start_from_the_previous_coil_pose(coil):
    cold = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, primary_field="direct")
    warm = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, primary_field="direct", warm_start=True)
    assert warm.solve(coil, _top_pose(), 1e8).info["warm_start"] is False  # nothing to start from yet
    moved = _top_pose(center=(5.0, -3.0, 1.0))  # 3 mm aside, at twice the dI/dt: the start is scaled
    reference = cold.solve(coil, moved, 2e8)
    result = warm.solve(coil, moved, 2e8)
    assert result.info["warm_start"] is True
    assert reference.info["warm_start"] is False
    assert result.info["iterations"] < reference.info["iterations"]
    peak = np.abs(reference.e_vector.array).max()
    np.testing.assert_allclose(result.e_vector.array, reference.e_vector.array, atol=1e-5 * peak)
    warm.warm_start = False
    assert warm.solve(coil, moved, 2e8).info["iterations"] == reference.info["iterations"]


def test_grid_primary_field_agrees_with_direct(ras_result, coil):
    _, reference = ras_result
    grid = PrimaryFieldGrid(coil, spacing_mm=2.0, half_width_mm=40.0, depth_mm=70.0)
    simulation = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, grid=grid)
    result = simulation.solve(coil, _top_pose(), 1e8)
    assert result.info["primary_field"] == "grid"
    difference = np.abs(result.e_vector.array - reference.e_vector.array).max()
    assert difference < 3e-3 * reference.e_magnitude.array.max()
    with pytest.raises(TypeError, match="PrimaryFieldGrid"):
        EFieldSimulation(_sphere(), device="cpu", grid="grid")


def test_compile_is_refused_without_the_gpu_solver(monkeypatch):
    from CondNetLogic.solver import multigrid

    def no_setup(*args, **kwargs):
        raise AssertionError("the multigrid setup ran before compile=True was refused")

    monkeypatch.setattr(multigrid, "conductor_components", no_setup)
    with pytest.raises(ValueError, match=r"compile=True \(--compile\) needs the torch backend.*here is cpu"):
        EFieldSimulation(_sphere(), device="cpu", compile=True)


def test_progress_and_cancel(coil):
    simulation = EFieldSimulation(_sphere(), device="cpu", primary_field="direct")
    seen = []
    simulation.solve(coil, _top_pose(), 1e8, progress=lambda fraction, message: seen.append(fraction))
    assert seen[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert seen == sorted(seen)
    with pytest.raises(Cancelled):
        simulation.solve(coil, _top_pose(), 1e8, cancel=lambda: True)
    # Cancel while the primary field is evaluated (the Slicer panel's Cancel button during the longest step).
    messages = []
    with pytest.raises(Cancelled, match="primary-field"):
        simulation.solve(coil, _top_pose(), 1e8, progress=lambda fraction, message: messages.append(message),
                         cancel=lambda: any(m.startswith("primary field: faces") for m in messages))
    assert not any(m.startswith("solving") for m in messages)


def test_setup_progress_and_cancel():
    messages = []
    EFieldSimulation(_sphere(), device="cpu", progress=lambda fraction, message: messages.append(message))
    assert messages[-1] == "solver ready"
    assert any(m.startswith("solver: coarse level") for m in messages)
    with pytest.raises(Cancelled, match="setup"):
        EFieldSimulation(_sphere(), device="cpu", cancel=lambda: True)


def _with(volume, array):
    return Volume(array, volume.ijk_to_ras)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda v: _with(v, np.where(v.array > 0, np.nan, 0.0)), ValueError, "NaN"),
        (lambda v: _with(v, -v.array), ValueError, "negative"),
        (lambda v: _with(v, np.zeros(v.shape)), ValueError, "no head"),
        (lambda v: Volume(v.array, v.ijk_to_ras @ np.diag([1.0, 1.0, 2.0, 1.0])), ValueError, "isotropic"),
        (lambda v: Volume(v.array, v.ijk_to_ras @ np.array([[1, 0.6, 0, 0], [0, 0.8, 0, 0], [0, 0, 1, 0],
                                                            [0, 0, 0, 1.0]])), ValueError, "orthogonal"),
        (lambda v: _with(v, np.stack([v.array] * 3, axis=-1)), ValueError, "scalar 3D"),
        (lambda v: _with(v, v.array.astype(complex)), TypeError, "real numeric"),
        (lambda v: v.array, TypeError, "Volume"),
    ],
    ids=["nan", "negative", "empty", "anisotropic", "sheared", "vector", "complex", "array"],
)
def test_bad_conductivity_raises(make, error, match):
    with pytest.raises(error, match=match):
        EFieldSimulation(make(_sphere()), device="cpu")


@pytest.fixture(scope="module")
def simulation():
    return EFieldSimulation(_sphere(), device="cpu", primary_field="direct")


def test_coil_through_the_head_raises(simulation, coil):
    pose = coil_pose([2.0, -3.0, 1.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], scalp_offset_mm=0.0)
    with pytest.raises(ValueError, match="passes through the head"):
        simulation.solve(coil, pose, 1e8)


def test_coil_touching_the_head_raises(coil):
    # a 1 mm cube; the winding plane 0.7 mm above the top voxel centres lies outside every conducting voxel
    # but within 1 mm of the faces between the top voxels
    sigma = np.zeros((14, 14, 14))
    sigma[2:12, 2:12, 2:12] = 0.33
    simulation = EFieldSimulation(Volume.from_geometry(sigma, spacing=(1.0,) * 3), device="cpu")
    pose = coil_pose([6.5, 6.5, 11.7], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], scalp_offset_mm=0.0)
    with pytest.raises(ValueError, match="must not touch"):
        simulation.solve(coil, pose, 1e8)
    simulation.solve(coil, coil_pose([6.5, 6.5, 12.5], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], scalp_offset_mm=0.0), 1e8)


def _figure8_as_ccd(path, cell_mm: float = 1.0):
    """The shipped figure-8 as a SimNIBS ``.ccd`` dipole model: a dipole per cell, moment = winding number x area.

    A closed planar wire and the dipole sheet over the area it encloses (moment density = current x winding
    number, along +z) have the same vector potential; each wing's spiral is closed by its lead.
    """
    coil = load_coil("figure8_70mm")
    positions, moments = [], []
    for line in coil.polylines_mm:
        low, high = line[:, :2].min(axis=0), line[:, :2].max(axis=0)
        axes = [(np.arange(np.floor(a / cell_mm), np.ceil(b / cell_mm)) + 0.5) * cell_mm for a, b in zip(low, high)]
        centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
        here, after = line[None, :-1, :2] - centres[:, None], line[None, 1:, :2] - centres[:, None]
        cross = here[..., 0] * after[..., 1] - here[..., 1] * after[..., 0]
        winding = np.rint(np.arctan2(cross, (here * after).sum(-1)).sum(axis=1) / (2 * np.pi))
        keep = winding != 0
        positions.append(np.column_stack([centres[keep], np.zeros(keep.sum())]) * 1e-3)
        moments.append(np.column_stack([np.zeros((keep.sum(), 2)), winding[keep] * (cell_mm * 1e-3) ** 2]))
    rows = np.column_stack([np.concatenate(positions), np.concatenate(moments)])
    header = f"# figure8_70mm as dipoles;coilname=figure8 dipoles;dIdtmax={coil.didt_max / 1e6:g}\n{len(rows)}\n"
    path.write_text(header + "\n".join(" ".join(f"{v:.9g}" for v in row) for row in rows) + "\n")
    return path


def test_a_dipole_model_of_the_coil_gives_its_e_field(tmp_path, coil, ras_result):
    """The same coil as SimNIBS-style dipoles (.ccd) and as wires: the same field in the head, direct or gridded."""
    dipoles = load_coil(_figure8_as_ccd(tmp_path / "figure8_dipoles.ccd"))
    assert dipoles.didt_max == coil.didt_max
    _, wire = ras_result
    reference = wire.e_vector.array
    peak = np.linalg.norm(reference, axis=-1).max()
    direct = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, primary_field="direct").solve(
        dipoles, _top_pose(), 1e8)
    assert np.abs(direct.e_vector.array - reference).max() < 0.005 * peak  # measured 0.09 %
    grid = PrimaryFieldGrid(dipoles, spacing_mm=2.0, half_width_mm=40.0, depth_mm=70.0)
    gridded = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, grid=grid, primary_field="grid").solve(
        dipoles, _top_pose(), 1e8)
    assert np.abs(gridded.e_vector.array - reference).max() < 0.005 * peak  # measured 0.15 % (2 mm grid)


def test_a_dipole_inside_the_head_raises(tmp_path, simulation):
    dipoles = load_coil(_figure8_as_ccd(tmp_path / "figure8_dipoles.ccd", cell_mm=4.0))
    pose = coil_pose([2.0, -3.0, 1.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], scalp_offset_mm=0.0)
    with pytest.raises(ValueError, match="passes through the head"):
        simulation.solve(dipoles, pose, 1e8)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"coil": "figure8_70mm"}, TypeError, "Coil"),
        ({"coil_to_ras": np.diag([1.0, 1.0, -1.0, 1.0])}, ValueError, "determinant"),
        ({"didt": np.inf}, ValueError, "didt"),
        ({"didt": 0.0}, ValueError, "didt"),
    ],
)
def test_bad_solve_arguments(simulation, coil, kwargs, error, match):
    args = {"coil": coil, "coil_to_ras": _top_pose(), "didt": 1e8, **kwargs}
    with pytest.raises(error, match=match):
        simulation.solve(args["coil"], args["coil_to_ras"], args["didt"])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="primary_field"):
        EFieldSimulation(_sphere(), device="cpu", primary_field="fast")
    with pytest.raises(ValueError, match="tol"):
        EFieldSimulation(_sphere(), device="cpu", tol=2.0)


# --------------------------------------------------------------------------------------------------------
# condnet efield


@pytest.fixture
def sigma_file(tmp_path):
    path = tmp_path / "sigma.nii.gz"
    write_volume(_sphere(LIA), path)
    return path


def _cli_args(sigma_file, out, *extra):
    scalp = np.array([2.0, -3.0, 1.0 + RADIUS_MM + SPACING_MM / 2])
    return ["efield", "--conductivity", str(sigma_file), "--out", str(out), "--device", "cpu",
            "--coil-center", *map(str, scalp), "--coil-direction", "0", "1", "0", *extra]


def test_cli_writes_volumes_and_sidecar(sigma_file, tmp_path, capsys):
    out = tmp_path / "run"
    hand = ["--roi-center", "2", "-3", "25", "--roi-radius", "5", "--didt", "5e7", "--primary-field", "direct"]
    set_nifti_space(sigma_file, 4)  # a conductivity in MNI152 space gives E-fields in MNI152 space
    assert main(_cli_args(sigma_file, out, *hand)) == 0
    assert "V/m" in capsys.readouterr().out
    assert nifti_space(out / "efield.nii.gz") == nifti_space(out / "efield_magnitude.nii.gz") == (4, 4)
    vector = read_volume(out / "efield.nii.gz", allow_vector=True)
    magnitude = read_volume(out / "efield_magnitude.nii.gz")
    conductivity = read_volume(sigma_file)
    np.testing.assert_allclose(vector.ijk_to_ras, conductivity.ijk_to_ras, atol=1e-5)
    assert vector.array.shape == conductivity.shape + (3,)
    np.testing.assert_allclose(magnitude.array, np.linalg.norm(vector.array, axis=-1), rtol=1e-5)
    summary = json.loads((out / "efield.json").read_text())
    assert summary["didt_a_per_s"] == 5e7
    assert summary["coil"]["name"] == "figure8_70mm"
    assert len(summary["coil"]["file_sha256"]) == 64
    assert summary["solver"]["converged"]
    assert summary["solver"]["iterations"] > 0
    np.testing.assert_allclose(summary["normal_into_head_ras"], [0, 0, -1], atol=0.05)
    assert summary["stats"]["head"]["max"] == pytest.approx(float(magnitude.array.max()), rel=1e-5)
    assert summary["stats"]["roi"]["n_voxels"] > 0
    assert {"condnet_version", "coil_to_ras", "timings_s"} <= set(summary)


def test_cli_passes_the_coil_centre_offset_roi_radius_and_mso_on(sigma_file, tmp_path):
    """An off-axis --coil-center (RAS, as given), --scalp-offset, --roi-radius and --mso 100 reach the run: the coil
    sits --scalp-offset mm above the given point along its normal, and the ROI is the sphere of the given radius."""
    centre = np.array([2.0, -3.0, 1.0])
    point = centre + (RADIUS_MM + SPACING_MM / 2) * np.array([0.6, 0.0, 0.8])
    roi_centre = centre + [6.0, 0.0, 17.0]
    args = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--coil-center", *map(str, point), "--coil-direction", "0", "1", "0", "--scalp-offset", "7",
            "--roi-center", *map(str, roi_centre), "--roi-radius", "8", "--mso", "100",
            "--primary-field", "direct", "--tol", "1e-3"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "efield.json").read_text())
    assert summary["coil_center_scalp_ras_mm"] == point.tolist()
    assert summary["scalp_offset_mm"] == 7.0
    pose = np.array(summary["coil_to_ras"])
    np.testing.assert_allclose(pose[:3, 3], point - 7.0 * pose[:3, 2], atol=1e-9)
    conductivity = read_volume(sigma_file)
    conducting = conductivity.array > 0
    expected = int(np.count_nonzero(spherical_roi(conductivity, roi_centre, 8.0) & conducting))
    assert expected > int(np.count_nonzero(spherical_roi(conductivity, roi_centre, 5.0) & conducting))
    assert summary["stats"]["roi"]["n_voxels"] == expected
    assert summary["stats"]["roi"]["radius_mm"] == 8.0
    assert summary["didt_a_per_s"] == pytest.approx(1e8)  # --mso 100: the coil's maximum is allowed
    assert summary["didt_percent_of_coil_max"] == pytest.approx(100.0)


def test_cli_refuses_a_nan_handle_angle(sigma_file, tmp_path, capsys):
    args = _handle(_cli_args(sigma_file, tmp_path / "bad", "--roi-center", "2", "-3", "19", "--primary-field",
                             "direct", "--tol", "1e-3"), "--handle-angles", "0", "nan")
    assert main(args) == 2
    assert "needs two or more different finite angles" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_to_overwrite(sigma_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "efield.json").write_text("{}")
    assert main(_cli_args(sigma_file, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "efield.json").read_text() == "{}"
    assert main(_cli_args(sigma_file, out, "--overwrite")) == 0
    assert json.loads((out / "efield.json").read_text())["solver"]["converged"]


def test_cli_compile_needs_the_gpu(sigma_file, tmp_path, capsys):
    assert main(_cli_args(sigma_file, tmp_path / "run", "--compile", "--primary-field", "direct")) == 2
    assert "(--compile) needs the torch backend" in capsys.readouterr().err
    assert not (tmp_path / "run" / "efield.json").exists()


def test_cli_builds_then_reuses_a_grid_cache(sigma_file, tmp_path, monkeypatch):
    import CondNetLogic.primary_field as primary_field

    original = primary_field.PrimaryFieldGrid.__init__

    def small_grid(self, coil, **kwargs):
        # the default 300 x 300 x 250 mm grid takes minutes on a test machine; this sphere needs 70 mm
        original(self, coil, spacing_mm=3.0, half_width_mm=40.0, depth_mm=70.0)

    monkeypatch.setattr(primary_field.PrimaryFieldGrid, "__init__", small_grid)
    cache = tmp_path / "figure8.npz"
    assert main(_cli_args(sigma_file, tmp_path / "a", "--grid", str(cache))) == 0
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    assert main(_cli_args(sigma_file, tmp_path / "b", "--grid", str(cache))) == 0
    assert cache.stat().st_mtime_ns == stamp
    first = json.loads((tmp_path / "a" / "efield.json").read_text())
    second = json.loads((tmp_path / "b" / "efield.json").read_text())
    assert first["solver"]["primary_field"] == second["solver"]["primary_field"] == "grid"
    assert first["stats"]["head"]["max"] == pytest.approx(second["stats"]["head"]["max"], rel=1e-6)


def test_cli_default_normal_is_the_scalp_normal(tmp_path, capsys):
    # A flat-topped box: at a point on the top face far from the centre, the scalp normal is straight down,
    # while the direction to the head centre is tilted by 51 degrees (and its coil would cut the box).
    sigma = np.zeros((50, 50, 30), dtype=np.float32)
    sigma[5:45, 5:45, 5:25] = 0.3
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-49.0, -49.0, -29.0]  # voxel centres; the box spans -40..40, -40..40, -20..20 mm
    path = tmp_path / "box.nii.gz"
    write_volume(Volume(sigma, affine), path)
    out = tmp_path / "run"
    assert main(["efield", "--conductivity", str(path), "--out", str(out), "--device", "cpu", "--coil-center",
                 "25", "0", "20", "--coil-direction", "0", "1", "0", "--primary-field", "direct"]) == 0
    summary = json.loads((out / "efield.json").read_text())
    np.testing.assert_allclose(summary["normal_into_head_ras"], [0, 0, -1], atol=0.05)


def test_cli_warns_that_float32_cannot_reach_a_tight_tolerance(sigma_file, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="CondNetLogic.commands.efield"):
        assert main(_cli_args(sigma_file, tmp_path / "out", "--dtype", "float32")) == 0
    assert "--tol 1e-06 is tighter" in caplog.text


def _figure8_as_tcd(path):
    """The shipped figure-8 as a SimNIBS ``.tcd`` file: its segments as line elements, zlib + base64 arrays."""
    coil = load_coil("figure8_70mm")
    segments = coil.segments_mm()
    points, values = (base64.b64encode(zlib.compress(np.asarray(array, "<f8").tobytes())).decode()
                      for array in (segments.mean(axis=1), segments[:, 1] - segments[:, 0]))
    element = {"name": "windings", "stimulator": 0, "type": 2, "points": points, "values": values}
    path.write_text(json.dumps({"coilElementList": [element],
                                "stimulatorList": [{"name": "stimulator", "maxdIdt": coil.didt_max}]}))
    return path


def test_cli_takes_simnibs_ccd_and_tcd_coils(sigma_file, tmp_path):
    ccd = _figure8_as_ccd(tmp_path / "figure8_dipoles.ccd", cell_mm=2.0)
    tcd = _figure8_as_tcd(tmp_path / "figure8_lines.tcd")
    for name, coil_arg in (("wire", "figure8_70mm"), ("ccd", str(ccd)), ("tcd", str(tcd))):
        assert main(_cli_args(sigma_file, tmp_path / name, "--coil", coil_arg, "--primary-field", "direct")) == 0
    wire, dipoles, lines = (json.loads((tmp_path / name / "efield.json").read_text())
                            for name in ("wire", "ccd", "tcd"))
    assert dipoles["coil"] == {**dipoles["coil"], "name": "figure8_dipoles", "file": str(ccd)}
    assert lines["coil"] == {**lines["coil"], "name": "figure8_lines", "file": str(tcd)}
    assert dipoles["didt_a_per_s"] == lines["didt_a_per_s"] == wire["didt_a_per_s"] == 1e8  # dIdtmax A/us, maxdIdt A/s
    assert dipoles["stats"]["head"]["p99"] == pytest.approx(wire["stats"]["head"]["p99"], rel=0.01)
    assert lines["stats"]["head"]["p99"] == pytest.approx(wire["stats"]["head"]["p99"], rel=1e-6)  # the same wires


def test_cli_reruns_a_pose_from_a_coil_matrix_file(sigma_file, tmp_path, capsys):
    coarse = ["--primary-field", "direct", "--tol", "1e-8"]
    assert main(_cli_args(sigma_file, tmp_path / "first", *coarse)) == 0
    first = json.loads((tmp_path / "first" / "efield.json").read_text())
    np.savetxt(tmp_path / "coil_to_ras.txt", np.array(first["coil_to_ras"]))  # as the Slicer panel exports it
    for name, source in (("json", tmp_path / "first" / "efield.json"), ("text", tmp_path / "coil_to_ras.txt")):
        args = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / name), "--device", "cpu",
                "--coil-matrix", str(source), *coarse]
        assert main(args) == 0
        again = json.loads((tmp_path / name / "efield.json").read_text())
        assert again["coil_to_ras"] == first["coil_to_ras"]
        assert again["coil_matrix_file"] == str(source)
        assert "coil_center_scalp_ras_mm" not in again
        np.testing.assert_array_equal(read_volume(tmp_path / name / "efield.nii.gz", allow_vector=True).array,
                                      read_volume(tmp_path / "first" / "efield.nii.gz", allow_vector=True).array)
    np.testing.assert_allclose(first["handle_direction_ras"], [0.0, 1.0, 0.0], atol=1e-12)
    assert first["scalp_offset_mm"] == 4.0
    capsys.readouterr()
    matrix = ["--coil-matrix", str(tmp_path / "coil_to_ras.txt")]
    assert main(_cli_args(sigma_file, tmp_path / "both", *matrix)) == 2
    assert "--coil-matrix is the whole coil pose: drop --coil-center, --coil-direction" in capsys.readouterr().err
    bare = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / "none")]
    assert main(bare) == 2
    assert "give the coil pose: --coil-center (or --eeg-position" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    assert not (tmp_path / "both").exists()


def test_cli_places_the_coil_at_an_eeg_position_with_a_handle_angle(sigma_file, tmp_path, capsys):
    """Cz of the sphere (landmarks on its equator, a Slicer .mrk.json in LPS) with the handle posterior (0 deg)."""
    centre, radius = np.array([2.0, -3.0, 1.0]), RADIUS_MM
    ras = {"Nz": [0, radius, 0], "Iz": [0, -radius, 0], "LPA": [-radius, 0, 0], "RPA": [radius, 0, 0]}
    points = [{"label": label, "position": ((centre + offset) * [-1, -1, 1]).tolist()} for label, offset in ras.items()]
    landmarks = tmp_path / "fiducials.mrk.json"
    landmarks.write_text(json.dumps({"markups": [{"coordinateSystem": "LPS", "controlPoints": points}]}))
    coarse = ["--primary-field", "direct", "--tol", "1e-3"]
    eeg = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / "cz"), "--device", "cpu",
           "--eeg-position", "Cz", "--landmarks", str(landmarks), "--handle-angle", "0", *coarse]
    assert main(eeg) == 0
    summary = json.loads((tmp_path / "cz" / "efield.json").read_text())
    assert summary["eeg_position"] == "Cz"
    assert summary["landmarks_file"] == str(landmarks)
    np.testing.assert_allclose(summary["coil_center_scalp_ras_mm"], centre + [0, 0, radius], atol=SPACING_MM)
    np.testing.assert_allclose(summary["handle_direction_ras"], [0, -1, 0], atol=0.1)  # posterior
    assert summary["handle_angle_deg"] == pytest.approx(0.0, abs=1e-6)
    assert main(_cli_args(sigma_file, tmp_path / "vector", *coarse)) == 0  # handle along +A
    assert json.loads((tmp_path / "vector" / "efield.json").read_text())["handle_angle_deg"] == pytest.approx(
        180.0, abs=6.0)
    capsys.readouterr()
    base = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / "bad"), "--handle-angle", "0"]
    for args, message in (
        (base + ["--eeg-position", "Cz"], "--eeg-position and --landmarks go together"),
        (base + ["--eeg-position", "C9", "--landmarks", str(landmarks)], "'C9' is not a known 10-10 position"),
        (_cli_args(sigma_file, tmp_path / "bad", "--handle-angle", "45"), "got --coil-direction, --handle-angle"),
        (_cli_args(sigma_file, tmp_path / "bad", "--eeg-position", "Cz"), "got --coil-center, --eeg-position"),
    ):
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_handle_towards_a_point(sigma_file, tmp_path, capsys):
    """--handle-point (SimNIBS pos_ydir) gives the pose that --coil-direction along the same line gives."""
    coarse = ["--primary-field", "direct", "--tol", "1e-3"]
    args = _cli_args(sigma_file, tmp_path / "direction", *coarse)
    scalp = np.array([float(value) for value in args[args.index("--coil-center") + 1:][:3]])
    assert main(args) == 0
    towards = scalp + [0.0, 40.0, 25.0]  # anterior and outward: the outward part is dropped
    assert main(_handle(_cli_args(sigma_file, tmp_path / "point", *coarse), "--handle-point", *map(str, towards))) == 0
    direction, point = (json.loads((tmp_path / name / "efield.json").read_text()) for name in ("direction", "point"))
    np.testing.assert_allclose(point["coil_to_ras"], direction["coil_to_ras"], atol=1e-9)
    assert point["handle_point_ras_mm"] == towards.tolist()
    capsys.readouterr()
    for extra, message in ((["--handle-point", *map(str, scalp + [0.0, 0.0, 30.0])], "lies on the coil normal"),
                           (["--handle-point", "0", "50", "0", "--handle-angle", "0"],
                            "got --handle-angle, --handle-point")):
        assert main(_handle(_cli_args(sigma_file, tmp_path / "bad", *coarse), *extra)) == 2, extra
        assert message in capsys.readouterr().err
    assert main(_cli_args(sigma_file, tmp_path / "bad", "--handle-point", "0", "50", "0")) == 2
    assert "got --coil-direction, --handle-point" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_places_the_coil_on_the_head_not_on_a_stray_voxel_above_it(tmp_path):
    """A conducting voxel 15 mm above the sphere's top (as label maps made into conductivity may hold) is the
    outermost point on the ray to Cz, but the coil goes on the head's scalp (scalp.outer_head)."""
    centre, radius = np.array([2.0, -3.0, 1.0]), RADIUS_MM
    sphere = _sphere(n=33)
    island = sphere.array.copy()
    top = np.rint(sphere.ras_to_ijk_points(centre + [0.0, 0.0, radius + 15.0])).astype(int)
    island[tuple(top)] = 0.3
    path = tmp_path / "sigma_island.nii.gz"
    write_volume(sphere.with_array(island), path)
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps({label: (centre + offset).tolist() for label, offset in (
        ("Nz", [0, radius, 0]), ("Iz", [0, -radius, 0]), ("LPA", [-radius, 0, 0]), ("RPA", [radius, 0, 0]))}))
    assert main(["efield", "--conductivity", str(path), "--out", str(tmp_path / "cz"), "--device", "cpu",
                 "--eeg-position", "Cz", "--landmarks", str(landmarks), "--handle-angle", "0",
                 "--primary-field", "direct", "--tol", "1e-3"]) == 0
    summary = json.loads((tmp_path / "cz" / "efield.json").read_text())
    np.testing.assert_allclose(summary["coil_center_scalp_ras_mm"], centre + [0, 0, radius], atol=SPACING_MM)
    np.testing.assert_allclose(summary["normal_into_head_ras"], [0, 0, -1], atol=0.05)


def test_cli_puts_the_coil_over_a_target_and_reports_its_roi(sigma_file, tmp_path, capsys):
    """--target: the coil on the nearest scalp point (near the top of the sphere for a target under it), ROI there."""
    centre = np.array([2.0, -3.0, 1.0])
    target = centre + [0.0, 0.0, 15.0]
    coarse = ["--primary-field", "direct", "--tol", "1e-3", "--roi-radius", "4"]
    args = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / "t"), "--device", "cpu",
            "--target", *map(str, target), "--handle-angle", "45", *coarse]
    assert main(args) == 0
    summary = json.loads((tmp_path / "t" / "efield.json").read_text())
    assert summary["target_ras_mm"] == target.tolist()
    scalp = np.array(summary["coil_center_scalp_ras_mm"]) - centre  # on the 3 mm staircase near the top
    assert abs(np.linalg.norm(scalp) - RADIUS_MM) <= SPACING_MM
    assert scalp[2] / np.linalg.norm(scalp) > np.cos(np.deg2rad(15.0))
    assert summary["stats"]["roi"]["center_ras_mm"] == target.tolist()
    assert summary["stats"]["roi"]["n_voxels"] >= 7  # 4 mm around a 3 mm voxel centre
    capsys.readouterr()
    outside = centre + [0.0, 0.0, 3 * RADIUS_MM]
    args = ["efield", "--conductivity", str(sigma_file), "--out", str(tmp_path / "o"), "--device", "cpu",
            "--target", *map(str, target), "--handle-angle", "45", "--roi-center", *map(str, outside), *coarse]
    assert main(args) == 2  # refused before the solve, nothing written
    assert "holds no conducting voxel" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    both = _cli_args(sigma_file, tmp_path / "b", "--target", *map(str, target))
    assert main(both) == 2
    assert "give one of --coil-center, --eeg-position, --target; got --coil-center, --target" in capsys.readouterr().err


def test_cli_roi_from_a_mask_on_another_grid(sigma_file, tmp_path, capsys):
    """--roi-mask: a label volume on a R-A-S grid (the conductivity is L-I-A) with the 5 mm sphere as label 7 gives
    the sphere ROI's statistics exactly; without --roi-label every non-zero voxel counts."""
    centre = np.array([2.0, -3.0, 1.0])
    roi_centre = centre + [0.0, 0.0, 24.0]
    coarse = ["--primary-field", "direct", "--tol", "1e-3"]
    assert main(_cli_args(sigma_file, tmp_path / "sphere", "--roi-center", *map(str, roi_centre), *coarse)) == 0
    sphere = json.loads((tmp_path / "sphere" / "efield.json").read_text())["stats"]["roi"]
    grid = _sphere()  # the same voxel centres, in R-A-S order
    labels = np.where(spherical_roi(grid, roi_centre, 5.0), 7, 0).astype(np.int16)
    labels[spherical_roi(grid, centre + [15.0, 0.0, 15.0], 4.0)] = 3
    mask = tmp_path / "atlas.nii.gz"
    write_volume(grid.with_array(labels), mask)
    assert main(_cli_args(sigma_file, tmp_path / "seven", "--roi-mask", str(mask), "--roi-label", "7", *coarse)) == 0
    seven = json.loads((tmp_path / "seven" / "efield.json").read_text())["stats"]["roi"]
    assert seven["mask_file"] == str(mask)
    assert seven["labels"] == [7]
    assert len(seven["mask_sha256"]) == 64
    assert "center_ras_mm" not in seven
    for key in ("n_voxels", "mean", "max", "p99"):
        assert seven[key] == pytest.approx(sphere[key], rel=1e-6), key
    assert main(_cli_args(sigma_file, tmp_path / "all", "--roi-mask", str(mask), *coarse)) == 0
    both = json.loads((tmp_path / "all" / "efield.json").read_text())["stats"]["roi"]
    assert both["labels"] is None
    assert both["n_voxels"] > seven["n_voxels"]
    assert read_region_field(tmp_path / "seven" / "efield.json").region == "the ROI mask atlas.nii.gz (labels 7)"
    sweep = _handle(_cli_args(sigma_file, tmp_path / "sweep", "--roi-mask", str(mask), "--roi-label", "7", *coarse),
                    "--handle-angles", "0", "90")
    assert main(sweep) == 0  # the mask is the ROI the pose search keeps the strongest pose for
    search = json.loads((tmp_path / "sweep" / "efield.json").read_text())["pose_search"]
    assert [row["handle_angle_deg"] for row in search["poses"]] == [0.0, 90.0]
    assert search["poses"][search["best"]]["roi"]["mean"] == max(row["roi"]["mean"] for row in search["poses"])
    capsys.readouterr()
    outside = tmp_path / "outside.nii.gz"
    write_volume(grid.with_array(np.where(spherical_roi(grid, centre + [0, 0, 34.0], 2.0), 1, 0).astype(np.uint8)),
                 outside)
    vector = tmp_path / "vector.nii.gz"
    write_volume(Volume(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), vector)
    for extra, message in (
        (["--roi-mask", str(mask), "--roi-center", "0", "0", "0"], "give one ROI: --roi-center"),
        (["--roi-label", "7"], "--roi-label picks labels of --roi-mask"),
        (["--roi-mask", str(mask), "--roi-radius", "3"], "drop it with --roi-mask"),
        (["--roi-mask", str(mask), "--roi-label", "9"], "the ROI mask holds no voxel labelled 9"),
        (["--roi-mask", str(outside)], "holds no conducting voxel on the conductivity's grid"),
        (["--roi-mask", str(vector)], "scalar"),
        (["--roi-mask", str(tmp_path / "missing.nii.gz")], "missing.nii.gz"),
    ):
        assert main(_cli_args(sigma_file, tmp_path / "bad", *extra, *coarse)) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "bad").exists()


def _handle(args, *replacement):
    """``args`` of :func:`_cli_args` with ``--coil-direction 0 1 0`` replaced by ``replacement``."""
    at = args.index("--coil-direction")
    return args[:at] + list(replacement) + args[at + 4:]


def test_cli_handle_angle_sweep_keeps_the_angle_with_the_strongest_roi(sigma_file, tmp_path, capsys):
    """--handle-angles: one solve per angle; the kept field is the one a single run at the best angle gives."""
    coarse = ["--primary-field", "direct", "--tol", "1e-6", "--roi-radius", "4"]
    beside = np.array([2.0, -3.0, 1.0]) + [12.0, 0.0, 18.0]  # off the coil axis: the angle matters
    out = tmp_path / "sweep"
    args = _cli_args(sigma_file, out, "--roi-center", *map(str, beside), *coarse)
    assert main(_handle(args, "--handle-angles", "0", "45", "90", "135")) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "efield.json").read_text())
    rows = summary["pose_search"]["poses"]
    means = [row["roi"]["mean"] for row in rows]
    best = [0.0, 45.0, 90.0, 135.0][int(np.argmax(means))]
    assert [row["handle_angle_deg"] for row in rows] == [0.0, 45.0, 90.0, 135.0]  # rounded to 1e-6 degree
    assert summary["pose_search"]["best"] == int(np.argmax(means))
    assert all(row["coil_center_scalp_ras_mm"] == summary["coil_center_scalp_ras_mm"] for row in rows)
    assert summary["handle_angle_deg"] == pytest.approx(best, abs=1e-9)
    assert summary["stats"]["roi"]["mean"] == max(means)
    assert max(means) > 1.2 * min(means)
    assert f"handle angle {best:g} deg: ROI mean |E| {max(means):.1f} V/m, max" in printed
    assert printed.count("<- kept") == 1
    single = _cli_args(sigma_file, tmp_path / "single", "--roi-center", *map(str, beside), *coarse)
    assert main(_handle(single, "--handle-angle", f"{best:g}")) == 0
    again = json.loads((tmp_path / "single" / "efield.json").read_text())
    assert again["stats"]["roi"]["mean"] == pytest.approx(max(means), rel=1e-9)
    np.testing.assert_allclose(read_volume(out / "efield.nii.gz", allow_vector=True).array,
                               read_volume(tmp_path / "single" / "efield.nii.gz", allow_vector=True).array)
    on_axis = np.array([2.0, -3.0, 1.0]) + [0.0, 0.0, 18.0]  # under the centre of a sphere: the angle does not matter
    args = _cli_args(sigma_file, tmp_path / "axis", "--roi-center", *map(str, on_axis), *coarse)
    assert main(_handle(args, "--handle-angles", "0", "90")) == 0
    rows = json.loads((tmp_path / "axis" / "efield.json").read_text())["pose_search"]["poses"]
    assert rows[0]["roi"]["mean"] == pytest.approx(rows[1]["roi"]["mean"], rel=0.02)
    capsys.readouterr()
    for extra, message in ((["--handle-angles", "45"], "needs two or more different finite angles"),
                           (["--handle-angles", "45", "45"], "needs two or more different finite angles"),
                           (["--handle-angles", "0", "360", "--roi-center", "2", "-3", "19"], "(modulo 360)"),
                           (["--handle-angle", "0", "--search-step", "3", "--roi-center", "2", "-3", "19"],
                            "--search-step is the grid step of --search-radius"),
                           (["--handle-angles", "0", "90"], "give --target, --roi-center or --roi-mask"),
                           (["--handle-angle", "0", "--search-radius", "6"], "--roi-center or --roi-mask"),
                           (["--handle-angle", "0", "--search-radius", "0", "--roi-center", "2", "-3", "19"],
                            "--search-radius and --search-step must be positive"),
                           (["--handle-angle", "0", "--search-radius", "6", "--roi-center", "2", "-3", "19",
                             "--normal", "0", "0", "-1"], "drop --normal")):
        assert main(_handle(_cli_args(sigma_file, tmp_path / "bad", *coarse[:4]), *extra)) == 2
        assert message in capsys.readouterr().err
    both = _cli_args(sigma_file, tmp_path / "bad", "--handle-angles", "0", "90", "--roi-center", *map(str, beside))
    assert main(both) == 2
    assert "got --coil-direction, --handle-angles" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_searches_coil_centres_around_the_start(sigma_file, tmp_path, capsys):
    """--search-radius: coil centres on the scalp around the start; the strongest is nearer to an off-axis ROI."""
    sphere_centre = np.array([2.0, -3.0, 1.0])
    beside = sphere_centre + [12.0, 0.0, 18.0]
    out = tmp_path / "search"
    args = _cli_args(sigma_file, out, "--roi-center", *map(str, beside), "--search-radius", "12", "--search-step", "6",
                     "--primary-field", "direct", "--tol", "1e-6", "--roi-radius", "4")
    assert main(_handle(args, "--handle-angles", "0", "90")) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "efield.json").read_text())
    rows = summary["pose_search"]["poses"]
    assert len(rows) == 2 * 13  # 13 centres within 12 mm on a 6 mm grid, two angles each
    centres = np.array([row["coil_center_scalp_ras_mm"] for row in rows])
    assert np.abs(np.linalg.norm(centres - sphere_centre, axis=1) - RADIUS_MM).max() <= SPACING_MM  # on the scalp
    means = [row["roi"]["mean"] for row in rows]
    best = summary["pose_search"]["best"]
    assert best == int(np.argmax(means))
    assert summary["coil_center_scalp_ras_mm"] == rows[best]["coil_center_scalp_ras_mm"]
    assert summary["stats"]["roi"]["mean"] == max(means) > max(means[:2])  # better than at the start
    start, kept = centres[0], centres[best]
    assert np.linalg.norm(kept - beside) < np.linalg.norm(start - beside)  # moved towards the ROI
    assert printed.count("<- kept") == 1
    assert f"centre {', '.join(f'{v:.1f}' for v in kept)}, handle angle" in printed


def test_cli_stimulator_output_in_percent(sigma_file, tmp_path, capsys, caplog):
    coarse = ["--primary-field", "direct", "--tol", "1e-3"]
    assert main(_cli_args(sigma_file, tmp_path / "half", "--mso", "50", *coarse)) == 0
    summary = json.loads((tmp_path / "half" / "efield.json").read_text())
    assert summary["didt_a_per_s"] == pytest.approx(5e7)  # 50 % of figure8_70mm's 1e8 A/s
    assert summary["didt_percent_of_coil_max"] == pytest.approx(50.0)
    for bad in ("0", "150"):
        assert main(_cli_args(sigma_file, tmp_path / "bad", "--mso", bad, *coarse)) == 2
        assert "--mso must be a percentage in (0, 100]" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        main(_cli_args(sigma_file, tmp_path / "both", "--mso", "50", "--didt", "1e8"))
    assert "not allowed with argument" in capsys.readouterr().err
    with caplog.at_level("WARNING", logger="CondNetLogic.commands.efield"):
        assert main(_cli_args(sigma_file, tmp_path / "us", "--didt", "120", *coarse)) == 0
        assert main(_cli_args(sigma_file, tmp_path / "over", "--didt", "2e8", *coarse)) == 0
    assert "did you mean 120 A/us, i.e. --didt 1.2e+08?" in caplog.text
    assert "--didt 2e+08 A/s is 200 % of the maximum of coil figure8_70mm" in caplog.text


def test_cli_needs_didt_for_a_coil_without_a_maximum(sigma_file, tmp_path, capsys):
    """A coil file without a maximum dI/dt (SimNIBS's Magstim_70mm_Fig8.ccd): --didt is needed, --mso refused."""
    data = load_coil("figure8_70mm").to_dict()
    del data["didt_max_a_per_s"]
    data["name"] = "open"
    coil_path = tmp_path / "open.json"
    coil_path.write_text(json.dumps(data))
    coarse = ["--coil", str(coil_path), "--primary-field", "direct", "--tol", "1e-3"]
    for extra, option in (([], "the default of 100 % output"), (["--mso", "50"], "--mso")):
        assert main(_cli_args(sigma_file, tmp_path / "no", *coarse, *extra)) == 2
        err = capsys.readouterr().err
        assert f"coil 'open' gives no maximum dI/dt (its file has no dIdtmax / maxdIdt), so {option}" in err
        assert "pass --didt in A/s" in err
        assert not (tmp_path / "no").exists()
    assert main(_cli_args(sigma_file, tmp_path / "yes", *coarse, "--didt", "8e7")) == 0
    summary = json.loads((tmp_path / "yes" / "efield.json").read_text())
    assert summary["didt_a_per_s"] == pytest.approx(8e7)
    assert summary["didt_percent_of_coil_max"] is None


def test_cli_says_when_the_solve_did_not_converge(sigma_file, tmp_path, capsys, caplog):
    # The solver's RuntimeWarning reaches the log (not a bare warnings line), and the last line says it.
    with caplog.at_level("WARNING"):
        assert main(_cli_args(sigma_file, tmp_path / "out", "--tol", "1e-30", "--primary-field", "direct")) == 0
    assert "NOT CONVERGED" in capsys.readouterr().out
    assert any(r.name == "py.warnings" and "did not converge" in r.getMessage() for r in caplog.records)
    assert not json.loads((tmp_path / "out" / "efield.json").read_text())["solver"]["converged"]


def test_cli_checks_the_coil_before_building_the_solver(sigma_file, tmp_path, capsys, monkeypatch):
    import CondNetLogic.solver as solver

    def never(*args, **kwargs):
        raise AssertionError("the solver was built for a coil inside the head")

    monkeypatch.setattr(solver, "PotentialSolver", never)
    assert main(_cli_args(sigma_file, tmp_path / "out", "--normal", "0", "0", "1")) == 2
    assert "passes through the head" in capsys.readouterr().err


def test_cli_refuses_bad_didt_and_grid_names_before_any_work(sigma_file, tmp_path, capsys, monkeypatch):
    import CondNetLogic.io as io

    def never(*args, **kwargs):
        raise AssertionError("the conductivity was read before the options were checked")

    monkeypatch.setattr(io, "read_volume", never)
    for extra, message in ((["--didt", "0"], "--didt must be a finite, non-zero"),
                           (["--didt", "nan"], "--didt must be a finite, non-zero"),
                           (["--didt", "inf"], "--didt must be a finite, non-zero"),
                           (["--mso", "nan"], "--mso must be a percentage"),
                           (["--grid", str(tmp_path / "coil_grid")], "coil-grid files end in .npz")):
        assert main(_cli_args(sigma_file, tmp_path / "out", *extra)) == 2, extra
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "coil_grid").exists()


def test_cli_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "negative.nii.gz"
    volume = _sphere()
    write_volume(_with(volume, -volume.array), path)
    assert main(_cli_args(path, tmp_path / "out")) == 2
    assert "negative" in capsys.readouterr().err
    assert main(_cli_args(path, tmp_path / "out", "--coil", "nonexistent_coil")) == 2
    assert "no coil file" in capsys.readouterr().err


def test_strongest_pose_ranks_by_the_roi_mean_not_its_peak():
    """strongest_pose keeps the pose with the highest mean |E| in the ROI: a pose with a higher peak but a lower
    mean loses, and each row reports that pose's own ROI statistics."""
    from CondNetLogic.efield import strongest_pose

    grid = Volume.from_geometry(np.zeros((5, 5, 5)), spacing=(1.0,) * 3)
    roi = np.zeros(grid.shape, dtype=bool)
    roi[1:4, 1:4, 1:4] = True
    peaked = np.where(roi, 1.0, 0.0)
    peaked[2, 2, 2] = 50.0  # ROI mean 2.8 V/m, max 50 V/m
    broad = np.where(roi, 4.0, 0.0)  # ROI mean 4 V/m, max 4 V/m

    class Recorded:
        """Stands in for EFieldSimulation: pose number i gives the i-th field."""

        def solve(self, coil, pose, didt, progress=None, cancel=None, solves=1):
            magnitude = [peaked, broad][int(pose[0, 3])]
            return EFieldResult(grid.with_array(np.zeros(grid.shape + (3,))), grid.with_array(magnitude),
                                {"iterations": 7})

    poses = [np.eye(4), np.eye(4)]
    poses[1][0, 3] = 1.0
    best, result, rows = strongest_pose(Recorded(), None, poses, 1e8, roi)
    assert best == 1
    assert result.e_magnitude.array.max() == 4.0
    assert [row["mean"] for row in rows] == [pytest.approx(76.0 / 27.0), 4.0]
    assert [row["max"] for row in rows] == [50.0, 4.0]


def test_grid_build_cost_is_the_nodes_its_build_evaluates(coil, monkeypatch):
    """build_cost counts the nodes a build evaluates directly: half the grid for the figure-8 (x = 0 mirrors it),
    the whole grid when the grid is not centred on the mirror plane."""
    import CondNetLogic.primary_field as primary_field

    evaluated, real = [], primary_field._lattice_direct_chunked

    def counting(origin_m, steps_m, mask, *args, **kwargs):
        evaluated.append(int(np.count_nonzero(mask)))
        return real(origin_m, steps_m, mask, *args, **kwargs)

    monkeypatch.setattr(primary_field, "_lattice_direct_chunked", counting)
    for half_width_mm, shape in ((40.0, (11, 11, 9)), (41.0, (11, 11, 9))):  # centred on x = 0 / not centred
        assert PrimaryFieldGrid.grid_shape(8.0, half_width_mm=half_width_mm, depth_mm=70.0) == shape
        PrimaryFieldGrid(coil, spacing_mm=8.0, half_width_mm=half_width_mm, depth_mm=70.0)
        assert PrimaryFieldGrid.build_cost(coil, 8.0, half_width_mm=half_width_mm, depth_mm=70.0) == evaluated[-1]
    assert evaluated == [6 * 11 * 9, 11 * 11 * 9]
    assert PrimaryFieldGrid.build_cost(coil, 2.0) == 76 * 151 * 126


def _solves_that_pay(simulation, coil) -> int:
    """The fewest direct solves on ``simulation`` that cost more face evaluations than building its coil grid."""
    return PrimaryFieldGrid.build_cost(coil, simulation.grid_spacing_mm) // simulation.n_faces + 1


def test_auto_mode_builds_a_grid_once_the_coming_solves_pay_for_it(coil):
    """In the auto mode a solve evaluates dA/dt directly unless building the grid costs fewer points than the
    coming solves' direct evaluations; once built, every later solve resamples it."""
    simulation = EFieldSimulation(_sphere(), device="cpu", tol=1e-8, grid_spacing_mm=8.0)
    pays = _solves_that_pay(simulation, coil)
    assert not simulation.grid_pays_off(coil, pays - 1)
    assert simulation.grid_pays_off(coil, pays)
    direct = simulation.solve(coil, _top_pose(), 1e8, solves=pays - 1)
    assert direct.info["primary_field"] == "direct"
    assert simulation.held_grid(coil) is None
    gridded = simulation.solve(coil, _top_pose(), 1e8, solves=pays)
    assert gridded.info["primary_field"] == "grid"
    assert simulation.held_grid(coil) is not None
    assert simulation.solve(coil, _top_pose(), 1e8).info["primary_field"] == "grid"
    peak = direct.e_magnitude.array.max()
    assert np.abs(gridded.e_vector.array - direct.e_vector.array).max() < 0.02 * peak  # an 8 mm grid


def test_auto_mode_takes_a_grid_from_the_cache_for_a_single_solve(coil, tmp_path):
    """A grid already in the cache folder is resampled even for one solve; without it one solve goes direct."""
    from CondNetLogic.primary_field import cached_grid, cached_grid_path

    simulation = EFieldSimulation(_sphere(), device="cpu", grid_spacing_mm=8.0, grid_cache_dir=tmp_path)
    assert simulation.solve(coil, _top_pose(), 1e8).info["primary_field"] == "direct"
    cached_grid(coil, tmp_path, spacing_mm=8.0)
    assert cached_grid_path(coil, tmp_path, spacing_mm=8.0).is_file()
    simulation = EFieldSimulation(_sphere(), device="cpu", grid_spacing_mm=8.0, grid_cache_dir=tmp_path)
    assert simulation.grid_pays_off(coil, 1)
    assert simulation.solve(coil, _top_pose(), 1e8).info["primary_field"] == "grid"
    explicit = EFieldSimulation(_sphere(), device="cpu", grid_spacing_mm=8.0, grid_cache_dir=tmp_path,
                                primary_field="direct")
    assert explicit.solve(coil, _top_pose(), 1e8).info["primary_field"] == "direct"  # an explicit mode is kept


def test_auto_mode_builds_the_grid_once_single_solves_have_cost_as_much(coil):
    """Single coil moves (one solve each) go direct until their direct evaluations together with the next would cost
    more than the grid's build; that solve builds the grid, and later ones resample it."""
    simulation = EFieldSimulation(_sphere(), device="cpu", grid_spacing_mm=8.0)
    pays = _solves_that_pay(simulation, coil)
    modes = [simulation.solve(coil, _top_pose(), 1e8).info["primary_field"] for _ in range(pays + 1)]
    assert modes == ["direct"] * (pays - 1) + ["grid"] * 2


@pytest.mark.parametrize("many", [False, True])
def test_a_pose_search_builds_a_grid_when_its_poses_pay_for_it(coil, many):
    """strongest_pose tells each solve how many poses are left, so a search long enough to pay for the grid
    builds it at its first pose; a short one stays direct."""
    from CondNetLogic.efield import strongest_pose

    simulation = EFieldSimulation(_sphere(), device="cpu", grid_spacing_mm=8.0)
    pays = _solves_that_pay(simulation, coil)
    poses = [_top_pose(handle=(np.sin(angle), np.cos(angle), 0.0))
             for angle in np.linspace(0.0, np.pi, pays if many else pays - 1, endpoint=False)]
    roi = simulation.conductivity.array > 0
    _, result, rows = strongest_pose(simulation, coil, poses, 1e8, roi)
    assert len(rows) == len(poses)
    assert (simulation.held_grid(coil) is not None) == many
    assert result.info["primary_field"] == ("grid" if many else "direct")


def test_an_ensemble_builds_one_grid_for_all_its_members(coil, monkeypatch):
    """ensemble_spread: when the members' solves together pay for a grid, the first member builds it and the others
    resample the same grid."""
    from CondNetLogic.efield import ensemble_spread

    builds, real = [], PrimaryFieldGrid.__init__

    def counting(self, *args, **kwargs):
        builds.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(PrimaryFieldGrid, "__init__", counting)
    like = _sphere()
    pays = _solves_that_pay(EFieldSimulation(like, device="cpu", grid_spacing_mm=8.0), coil)
    members = [like.with_array(like.array * factor) for factor in np.linspace(0.8, 1.2, pays)]
    _, rows = ensemble_spread(members, coil, _top_pose(), 1e8, like=like, device="cpu", grid_spacing_mm=8.0)
    assert len(builds) == 1
    assert [row["primary_field"] for row in rows] == ["grid"] * pays
