"""How |E| varies across an ensemble of conductivity maps: ``efield.ensemble_spread`` and ``condnet efield
--ensemble``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.coil import coil_pose, load_coil
from CondNetLogic.efield import EFieldSimulation, ensemble_spread
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.metrics import spherical_roi
from CondNetLogic.volume import Volume

N, SPACING, RADIUS = 21, 3.0, 28.0


def _shells(inner_sigma: float, outer_sigma: float = 0.33) -> Volume:
    """A ball of ``outer_sigma`` with a core of ``inner_sigma`` (radius 18 mm), centred on the grid, RAS."""
    ijk = np.stack(np.meshgrid(*[np.arange(N)] * 3, indexing="ij"), axis=-1)
    radius = np.linalg.norm((ijk - (N - 1) / 2) * SPACING, axis=-1)
    sigma = np.where(radius <= RADIUS, np.where(radius <= 18.0, inner_sigma, outer_sigma), 0.0)
    return Volume.from_geometry(sigma, spacing=(SPACING,) * 3, origin=(-(N - 1) / 2 * SPACING,) * 3)


def _pose():
    return coil_pose([0.0, 0.0, RADIUS + SPACING / 2], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0])


@pytest.fixture(scope="module")
def coil():
    return load_coil("figure8_70mm")


def test_the_spread_is_the_sd_of_the_members_fields(coil):
    members = [_shells(value) for value in (0.1, 0.33, 1.0)]
    roi = spherical_roi(members[0].with_array(members[0].array > 0), (0.0, 0.0, 15.0), 6.0)
    spread, rows = ensemble_spread(members, coil, _pose(), 1e8, like=members[0], roi=roi, device="cpu", tol=1e-8)
    fields = [EFieldSimulation(m, device="cpu", tol=1e-8).solve(coil, _pose(), 1e8).e_magnitude.array for m in members]
    assert spread.same_grid(members[0])
    assert spread.array.dtype == np.float32
    np.testing.assert_allclose(spread.array, np.std(fields, axis=0), atol=1e-4)
    assert spread.array.max() > 1.0  # a core of another conductivity changes the field (V/m)
    for row, field in zip(rows, fields):
        assert row["converged"]
        assert row["iterations"] > 0
        assert row["head"]["p99"] == pytest.approx(np.percentile(field[members[0].array > 0], 99), rel=1e-3)
        assert row["roi"]["mean"] == pytest.approx(field[roi].mean(), rel=1e-5)


def test_a_homogeneous_ball_gives_the_same_field_whatever_its_conductivity(coil):
    """Inside a homogeneous conductor E does not depend on the conductivity's value: no spread."""
    members = [_shells(value, value) for value in (0.2, 0.33, 0.5)]
    spread, rows = ensemble_spread(members, coil, _pose(), 1e8, like=members[0], device="cpu", tol=1e-10)
    assert spread.array.max() < 1e-4 * rows[0]["head"]["max"]


def test_bad_ensembles_raise(coil):
    member = _shells(0.1)
    with pytest.raises(ValueError, match="at least two"):
        ensemble_spread([member], coil, _pose(), 1e8, like=member, device="cpu")
    shifted = Volume(member.array, member.ijk_to_ras + np.array([[0, 0, 0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0], [0] * 4]))
    with pytest.raises(ValueError, match="member 2 is not on the conductivity's grid"):
        ensemble_spread([member, shifted], coil, _pose(), 1e8, like=member, device="cpu")
    inside = coil_pose([0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="member 1: the coil passes through the head"):
        ensemble_spread([member, member], coil, inside, 1e8, like=member, device="cpu")


def test_cli_writes_the_spread_and_the_members_statistics(tmp_path, capsys, monkeypatch):
    import CondNetLogic.efield as efield

    modes, real = [], efield.EFieldSimulation

    def recording(*args, **kwargs):
        modes.append(kwargs.get("primary_field"))
        return real(*args, **kwargs)

    monkeypatch.setattr(efield, "EFieldSimulation", recording)
    paths = []
    for name, value in (("sigma", 0.33), ("low", 0.1), ("mid", 0.33), ("high", 1.0)):
        paths.append(tmp_path / f"{name}.nii.gz")
        write_volume(_shells(value), paths[-1])
    out = tmp_path / "run"
    args = ["efield", "--conductivity", str(paths[0]), "--out", str(out), "--device", "cpu", "--coil-center", "0",
            "0", str(RADIUS + SPACING / 2), "--coil-direction", "0", "1", "0", "--roi-center", "0", "0", "15",
            "--primary-field", "direct", "--ensemble", *map(str, paths[1:])]
    assert main(args) == 0
    assert "ensemble of 3: ROI mean |E|" in capsys.readouterr().out
    summary = json.loads((out / "efield.json").read_text())["ensemble"]
    assert [member["path"] for member in summary["members"]] == [str(p) for p in paths[1:]]
    assert modes == ["direct"] * 4  # the members' solvers are built as the main one
    assert {member["primary_field"] for member in summary["members"]} == {"direct"}
    means = [member["roi"]["mean"] for member in summary["members"]]
    assert summary["roi_mean"]["sd"] == pytest.approx(np.std(means))
    assert summary["roi_mean"]["sd"] > 0
    assert summary["roi_mean"]["min"] == min(means)
    spread = read_volume(out / "efield_magnitude_sd.nii.gz")
    assert spread.same_grid(read_volume(paths[0]))
    assert summary["members"][1]["roi"]["mean"] == pytest.approx(
        json.loads((out / "efield.json").read_text())["stats"]["roi"]["mean"], rel=1e-6)  # "mid" is the main map
    assert main(args) == 2  # every output exists: refused, the spread too
    single = args[:args.index("--ensemble")]
    alone = tmp_path / "alone"  # a folder holding only an earlier run's spread
    alone.mkdir()
    (alone / "efield_magnitude_sd.nii.gz").write_bytes((out / "efield_magnitude_sd.nii.gz").read_bytes())
    assert main([*single[:4], str(alone), *single[5:]]) == 2  # it would not belong to the new field: refused
    assert "efield_magnitude_sd.nii.gz" in capsys.readouterr().err
    assert main([*single, "--overwrite"]) == 0  # replaced: the stale spread goes
    assert not (out / "efield_magnitude_sd.nii.gz").exists()
    assert "ensemble" not in json.loads((out / "efield.json").read_text())

    (tmp_path / "coarse").mkdir()
    coarse = tmp_path / "coarse" / "c.nii.gz"
    write_volume(Volume.from_geometry(np.ones((5, 5, 5)), spacing=(6.0,) * 3), coarse)
    assert main([*args[:4], str(tmp_path / "run2"), *args[5:-3], str(paths[1]), str(coarse)]) != 0
    assert "is not on the grid" in capsys.readouterr().err
    assert main([*args[:4], str(tmp_path / "run3"), *args[5:-3], str(paths[1])]) != 0
    assert "at least two" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()
    assert not (tmp_path / "run3").exists()


def test_cli_passes_its_solver_options_to_every_solve_and_writes_the_members_spread(tmp_path, monkeypatch):
    """--device and --tol reach the main solve and each member's; efield_magnitude_sd.nii.gz is the spread."""
    import CondNetLogic.efield as efield

    built, spreads = [], []
    real_simulation, real_spread = efield.EFieldSimulation, efield.ensemble_spread

    def recording(*args, **kwargs):
        built.append((kwargs.get("device"), kwargs.get("tol")))
        return real_simulation(*args, **kwargs)

    def spread(*args, **kwargs):
        result = real_spread(*args, **kwargs)
        spreads.append(result[0].array.copy())
        return result

    monkeypatch.setattr(efield, "EFieldSimulation", recording)
    monkeypatch.setattr(efield, "ensemble_spread", spread)
    paths = []
    for name, value in (("sigma", 0.33), ("low", 0.1), ("high", 1.0)):
        paths.append(tmp_path / f"{name}.nii.gz")
        write_volume(_shells(value), paths[-1])
    out = tmp_path / "run"
    assert main(["efield", "--conductivity", str(paths[0]), "--out", str(out), "--device", "cpu", "--coil-center",
                 "0", "0", str(RADIUS + SPACING / 2), "--coil-direction", "0", "1", "0", "--tol", "1e-5",
                 "--primary-field", "direct", "--ensemble", *map(str, paths[1:])]) == 0
    assert built == [("cpu", 1e-5)] * 3
    assert len(spreads) == 1
    assert spreads[0].max() > 1.0
    np.testing.assert_array_equal(read_volume(out / "efield_magnitude_sd.nii.gz").array, spreads[0])
