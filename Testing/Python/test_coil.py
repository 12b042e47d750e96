"""Coil files, the coil frame, and poses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from CondNetLogic.coil import (
    Coil,
    check_coil_to_ras,
    coil_file,
    coil_pose,
    figure8_spiral_polylines,
    list_coils,
    load_coil,
    read_coil_to_ras,
)
from CondNetLogic.primary_field import dadt_at_points


def _spec(**winding) -> dict:
    base = {"type": "figure8_spiral", "inner_diameter_mm": 47.0, "outer_diameter_mm": 97.0, "turns": 9}
    base.update(winding)
    return {"format_version": 1, "name": "test", "didt_max_a_per_s": 1e8, "winding": base}


def _signed_area(line: np.ndarray) -> float:
    return 0.5 * float(np.sum(line[:-1, 0] * line[1:, 1] - line[1:, 0] * line[:-1, 1]))


def test_shipped_coils_load_and_validate():
    names = list_coils()
    assert "figure8_70mm" in names
    assert "coil.schema" not in names
    for name in names:
        coil = load_coil(name)
        assert coil.name == name
        assert coil.didt_max > 0
        assert coil.segments_mm().shape[1:] == (2, 3)


def test_default_coil_matches_paper_and_magstim():
    coil = load_coil("figure8_70mm")
    assert coil.winding["inner_diameter_mm"] == 47.0
    assert coil.winding["outer_diameter_mm"] == 97.0
    assert coil.winding["turns"] == 9
    assert coil.didt_max == pytest.approx(1e8)


def test_figure8_geometry_and_current_sense():
    wing_pos, wing_neg = figure8_spiral_polylines(47.0, 97.0, 9, points_per_turn=64)
    for line, centre_x in ((wing_pos, 48.5), (wing_neg, -48.5)):
        np.testing.assert_array_equal(line[0], line[-1])
        radius = np.hypot(line[:, 0] - centre_x, line[:, 1])
        assert radius.min() == pytest.approx(23.5)
        assert radius.max() == pytest.approx(48.5)
        np.testing.assert_array_equal(line[:, 2], 0.0)
        # total turning angle of the spiral part: 9 turns
        angles = np.unwrap(np.arctan2(line[:-1, 1], line[:-1, 0] - centre_x))
        assert abs(angles[-1] - angles[0]) == pytest.approx(2 * np.pi * 9)
    # +x wing counter-clockwise about +z (positive signed area), -x wing clockwise
    assert _signed_area(wing_pos) > 0
    assert _signed_area(wing_neg) < 0
    # Each spiral starts outside, on the far side from the coil centre, and ends inside, on the same ray.
    np.testing.assert_allclose(wing_pos[0], [97.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(wing_pos[-2], [72.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(wing_neg[0], [-97.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(wing_neg[-2], [-72.0, 0.0, 0.0], atol=1e-9)


def test_figure8_wing_spacing_moves_the_wing_centres():
    """Wings 44 mm apart with 40 mm outer diameter: centres at x = +-22, 4 mm of gap between the wings."""
    wing_pos, wing_neg = figure8_spiral_polylines(20.0, 40.0, 3, wing_spacing_mm=44.0, points_per_turn=16)
    np.testing.assert_allclose(wing_pos[0], [42.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(wing_neg[0], [-42.0, 0.0, 0.0], atol=1e-12)
    for line, centre_x in ((wing_pos, 22.0), (wing_neg, -22.0)):
        assert np.hypot(line[:, 0] - centre_x, line[:, 1]).max() == pytest.approx(20.0)
    assert wing_pos[:, 0].min() > 2.0 > -2.0 > wing_neg[:, 0].max()  # the gap between the wings stays clear


def test_induced_field_under_centre_points_along_handle():
    coil = load_coil("figure8_70mm")
    dadt = dadt_at_points(np.array([[0.0, 0.0, 0.01]]), coil.segments_mm() * 1e-3, 1e8)
    primary_e = -dadt[0]
    assert primary_e[1] > 0.99 * np.linalg.norm(primary_e)


@pytest.mark.parametrize(
    "winding",
    [
        {"type": "figure8_spiral", "inner_diameter_mm": 20, "outer_diameter_mm": 40, "turns": 3.5,
         "wing_spacing_mm": 44, "points_per_turn": 16},
        {"type": "polylines", "polylines_mm": [[[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 0, 0]]]},
    ],
)
def test_dict_and_file_round_trip(tmp_path, winding):
    data = {"format_version": 1, "name": "rt", "didt_max_a_per_s": 5e7, "winding": winding, "notes": ["n"]}
    coil = Coil.from_dict(data)
    again = Coil.from_dict(coil.to_dict())
    assert again.to_dict() == coil.to_dict() == {**data, "didt_max_a_per_s": 5e7}
    assert again.sha256 == coil.sha256
    np.testing.assert_array_equal(again.segments_mm(), coil.segments_mm())
    path = coil.to_file(tmp_path / "rt.json")
    from_file = Coil.from_file(path)
    assert from_file.sha256 == coil.sha256
    assert load_coil(path).sha256 == coil.sha256
    assert coil_file(path) == path


def test_to_file_refuses_to_overwrite(tmp_path):
    coil = load_coil("figure8_70mm")
    path = coil.to_file(tmp_path / "c.json")
    with pytest.raises(FileExistsError, match="overwrite"):
        coil.to_file(path)
    coil.to_file(path, overwrite=True)


def test_sha256_changes_with_the_winding():
    assert Coil.from_dict(_spec(turns=9)).sha256 != Coil.from_dict(_spec(turns=8)).sha256


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({**_spec(), "didt_max_a_per_s": -1.0}, "didt_max_a_per_s"),
        ({**_spec(), "didt_max_a_per_s": None}, "didt_max_a_per_s"),  # leave it out instead
        ({**_spec(), "didt_max_a_per_s": float("inf")}, "didt_max_a_per_s: inf is not a finite slope"),  # 1e400
        ({**_spec(), "extra": 1}, "extra"),
        ({**_spec(), "format_version": 2}, "format_version"),
        (_spec(turns="nine"), "winding"),
        (_spec(type="circle"), "winding"),
    ],
)
def test_schema_violations_raise(data, match):
    with pytest.raises(ValueError, match=match):
        Coil.from_dict(data)


@pytest.mark.parametrize(
    ("winding", "match"),
    [
        ({"inner_diameter_mm": 97.0, "outer_diameter_mm": 47.0}, "inner_diameter_mm < outer"),
        ({"wing_spacing_mm": 60.0}, "overlap"),
        ({"turns": 1e13}, "exceeds 1,000,000 vertices per wing"),  # refused before any memory is taken
        ({"turns": 20000, "points_per_turn": 64}, "20000 x 64 exceeds"),
    ],
)
def test_inconsistent_figure8_raises(winding, match):
    with pytest.raises(ValueError, match=match):
        Coil.from_dict(_spec(**winding))


@pytest.mark.parametrize(
    ("polylines", "match"),
    [
        ([[[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [1, 0, "a"]]], "winding/polylines_mm/1: every item must be 3 numbers"),
        ([[[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [1, 0]]], "winding/polylines_mm/1: every item must be 3 numbers"),
        ([[[0, 0, 0], [1, 0, 0]], [[0, 0, 0]]], "winding/polylines_mm/1: a polyline needs at least 2 vertices"),
        ([[[0, 0, 0]]], "winding"),
    ],
)
def test_malformed_polylines_raise(polylines, match):
    """Only the first segment goes through the schema (fast for big coils); every other vertex is checked too."""
    data = {"format_version": 1, "name": "p", "didt_max_a_per_s": 1.0,
            "winding": {"type": "polylines", "polylines_mm": polylines}}
    with pytest.raises(ValueError, match=match):
        Coil.from_dict(data)


def test_zero_length_polyline_segment_raises():
    data = {"format_version": 1, "name": "z", "didt_max_a_per_s": 1.0,
            "winding": {"type": "polylines", "polylines_mm": [[[0, 0, 0], [0, 0, 0], [1, 0, 0]]]}}
    with pytest.raises(ValueError, match="zero-length"):
        Coil.from_dict(data)


def test_bad_files_and_names(tmp_path):
    with pytest.raises(FileNotFoundError):
        Coil.from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Coil.from_file(broken)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="invalid.json"):
        load_coil(invalid)
    with pytest.raises(ValueError, match="figure8_70mm"):
        load_coil("no_such_coil")
    for name in ("Magstim_70mm_Fig8.nii", "Magstim_70mm_Fig8.nii.gz"):  # read as NIfTI coil files
        (tmp_path / name).write_text("{}")
        with pytest.raises(ValueError, match=f"{name}: .*truncated"):
            load_coil(tmp_path / name)


CCD = """# Test coil, version 1.0;brand=Acme;coilname=Tiny B2;stimulator=none;dIdtmax=120.5;x=-0.2,0.2
3
# x y z mx my mz
0.01 0.0 -0.002  0.0 0.0 1.5e-4
-0.01 0.0 -0.002  0.0 0.0 -1.5e-4
0.0 0.02 -0.004  1e-5 0.0 0.0
"""


def test_ccd_dipole_coil_is_read_in_mm_and_a_per_s(tmp_path):
    path = tmp_path / "tiny_b2.ccd"
    path.write_text(CCD)
    coil = load_coil(path)
    assert coil.name == "tiny_b2"  # named after the file, as list_coils names coil files
    assert coil.description == "Acme Tiny B2; Test coil, version 1.0"
    assert coil.didt_max == pytest.approx(120.5e6)  # dIdtmax is in A/us
    np.testing.assert_allclose(coil.dipole_positions_mm, [[10, 0, -2], [-10, 0, -2], [0, 20, -4]])
    np.testing.assert_allclose(coil.dipole_moments_m2, [[0, 0, 1.5e-4], [0, 0, -1.5e-4], [1e-5, 0, 0]])
    assert coil.segments_mm().shape == (0, 2, 3)
    assert coil.polylines_mm == ()
    assert "dipoles=3" in repr(coil)
    assert load_coil(path) is coil  # read once per version of the file
    path.write_text(CCD.replace("dIdtmax=120.5", "dIdtmax=90"))  # edited (another size too): read again
    assert load_coil(path).didt_max == pytest.approx(90e6)
    json_file = coil.to_file(tmp_path / "tiny_b2.json")  # the coil JSON form, for Resources/coils
    again = load_coil(json_file)
    assert again.sha256 == coil.sha256
    np.testing.assert_array_equal(again.dipole_moments_m2, coil.dipole_moments_m2)
    pose = coil_pose([0.0, 0.0, 80.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], scalp_offset_mm=4.0)
    positions, moments = coil.dipoles_ras(pose)
    np.testing.assert_allclose(positions[0], [0.0, 10.0, 86.0])  # y along R, z along -S: x = y x z along A
    np.testing.assert_allclose(moments[0], [0.0, 0.0, -1.5e-4])


def test_ccd_header_without_a_description(tmp_path):
    path = tmp_path / "BARE.CCD"
    path.write_text("\ufeff# dIdtmax=80;coilname=Bare\r\n1\r\n0\t0 -0.01 0 0 1e-4\r\n\r\n")  # BOM, CRLF, tab
    coil = load_coil(path)
    assert coil.didt_max == pytest.approx(80e6)
    assert coil.description == "Bare"


#: First lines of two coil files of SimNIBS's distribution (``resources/coil_models``), read 2026-11-28: the
#: most used one gives no dIdtmax, a Drakaki (2022) model gives it among other fields, with a trailing ';'.
SIMNIBS_MAGSTIM_HEADER = "# Magstim_70mm_Fig8.ccd version 1.0 number of elements"
SIMNIBS_MC_B70_HEADER = ("# MC-B70.ccd version 1.0 number of elements; dIdtmax=155.33;x=-300,300;y=-200,200;"
                         "z=-200,200;resolution=3;stimulator=MagPro X100;brand=MagVenture;dIdtstim=151;"
                         "coilname=MC-B70;")


def _simnibs_ccd(path, header):
    """A .ccd file laid out as SimNIBS ships them: header, count, a comment line, then rows (m, m^2)."""
    path.write_text(f"{header}\n2\n# centers and weighted directions of the elements (magnetic dipoles)\n"
                    "-4.4e-02 1.4e-03 -4.17e-03 0.0 0.0 -2.8e-05\n4.4e-02 1.4e-03 -4.17e-03 0.0 0.0 2.8e-05\n")
    return path


def test_simnibs_ccd_without_didt_max_gives_a_coil_without_a_maximum(tmp_path):
    coil = load_coil(_simnibs_ccd(tmp_path / "Magstim_70mm_Fig8.ccd", SIMNIBS_MAGSTIM_HEADER))
    assert coil.didt_max is None
    assert coil.description == "Magstim_70mm_Fig8.ccd version 1.0 number of elements"
    assert any("no maximum dI/dt" in note and "--didt" in note for note in coil.notes)
    assert "didt_max=None" in repr(coil)
    data = coil.to_dict()
    assert "didt_max_a_per_s" not in data  # the coil JSON form leaves it out too
    again = load_coil(coil.to_file(tmp_path / "magstim.json"))
    assert again.didt_max is None
    assert again.sha256 == coil.sha256
    np.testing.assert_allclose(coil.dipole_positions_mm[0], [-44.0, 1.4, -4.17])


def test_simnibs_ccd_header_with_fields(tmp_path):
    coil = load_coil(_simnibs_ccd(tmp_path / "MagVenture_MC-B70.ccd", SIMNIBS_MC_B70_HEADER))
    assert coil.didt_max == pytest.approx(155.33e6)  # A/us -> A/s
    assert coil.description == "MagVenture MC-B70; MC-B70.ccd version 1.0 number of elements"


@pytest.mark.parametrize(("value", "didt_max", "note"),
                         [("147,100", 147e6, "dIdtmax lists 2 stimulators"), ("none", None, "no maximum dI/dt"),
                          ("", None, "no maximum dI/dt")])
def test_ccd_didt_max_lists_and_none(tmp_path, value, didt_max, note):
    coil = load_coil(_simnibs_ccd(tmp_path / "c.ccd", f"# c;dIdtmax={value};brand=B"))
    assert coil.didt_max == (None if didt_max is None else pytest.approx(didt_max))
    assert any(note in text for text in coil.notes)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (CCD.replace("\n3\n", "\n4\n"), "announces 4 dipoles but the file holds 3"),
        ("\n".join(CCD.splitlines()[:-1]) + "\n", "announces 3 dipoles but the file holds 2"),
        (CCD.replace("1e-5 0.0 0.0", "1e-5 0.0"), "line 6: expected 6 numbers"),
        (CCD.replace("1e-5", "x"), "line 6: expected 6 numbers"),
        (CCD.replace("1e-5", "nan"), "non-finite"),
        (CCD.replace("dIdtmax=120.5", "dIdtmax=fast"), "not a positive number"),
        (CCD.replace("dIdtmax=120.5", "dIdtmax=nan"), "not a positive number"),
        (CCD.replace("dIdtmax=120.5", "dIdtmax=-3"), "not a positive number"),
        (CCD.replace("dIdtmax=120.5", "dIdtmax=0,100"), "not a positive number"),
        ("# empty;dIdtmax=80\n0\n\n", "announces 0 dipoles; a coil needs at least one"),
        (CCD.replace("\n3\n", "\nthree\n"), "line 2 must give the number of dipoles"),
        ("# only a header;dIdtmax=1.0\n", "has 1 lines"),
    ],
)
def test_malformed_ccd_files_raise(tmp_path, text, match):
    path = tmp_path / "bad.ccd"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as raised:
        load_coil(path)
    assert str(path) in str(raised.value)


def test_coil_files_are_listed_and_loaded_by_name_from_both_folders(tmp_path, monkeypatch, caplog):
    import CondNetLogic.coil as coil_module

    shipped, own = tmp_path / "Resources" / "coils", tmp_path / "own"
    shipped.mkdir(parents=True)
    own.mkdir()
    for name in ("coil.schema.json", "figure8_70mm.json"):
        (shipped / name).write_text(coil_module.resource_path("coils", name).read_text())
    (shipped / "tiny_b2.CCD").write_text(CCD)  # any case
    (own / "figure8_70mm.ccd").write_text(CCD)  # a user's file never hides a shipped coil of the same name
    (own / "mine.ccd").write_text(CCD.replace("dIdtmax=120.5", "dIdtmax=80"))
    monkeypatch.setattr(coil_module, "resource_path", lambda *parts: tmp_path.joinpath("Resources", *parts))
    monkeypatch.setenv("CONDNET_COIL_DIR", str(own))
    with caplog.at_level("WARNING", logger="CondNetLogic.coil"):
        assert list_coils() == ["figure8_70mm", "mine", "tiny_b2"]
        assert list_coils() == ["figure8_70mm", "mine", "tiny_b2"]
    hidden = [r.getMessage() for r in caplog.records if "is not used: a shipped coil has the name" in r.getMessage()]
    assert len(hidden) == 1  # once per process
    assert str(own / "figure8_70mm.ccd") in hidden[0]
    assert load_coil("tiny_b2").didt_max == pytest.approx(120.5e6)
    assert load_coil("mine").didt_max == pytest.approx(80e6)
    assert coil_file("figure8_70mm") == shipped / "figure8_70mm.json"
    with pytest.raises(ValueError, match=f"add your own to {own}"):
        coil_file("theirs")
    monkeypatch.delenv("CONDNET_COIL_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert coil_module.user_coil_dir() == tmp_path / ".condnet" / "coils"
    assert list_coils() == ["figure8_70mm", "tiny_b2"]  # no such folder: the shipped coils only


def test_dipole_winding_must_pair_positions_and_moments():
    data = {"format_version": 1, "name": "d", "didt_max_a_per_s": 1.0,
            "winding": {"type": "dipoles", "positions_mm": [[0, 0, 0], [1, 0, 0]], "moments_m2": [[0, 0, 1]]}}
    with pytest.raises(ValueError, match="2 positions but 1 moments"):
        Coil.from_dict(data)
    for bad in ([0, 0], [0, "a", 1], [0, True, 1]):  # rows after the first are checked too (not by jsonschema)
        data["winding"]["moments_m2"] = [[0, 0, 1], bad]
        with pytest.raises(ValueError, match="winding/moments_m2: every item must be 3 numbers"):
            Coil.from_dict(data)


def test_coil_pose_frame():
    pose = coil_pose([10.0, 20.0, 80.0], [0.0, 0.0, -2.0], [0.2, 1.0, 0.5], scalp_offset_mm=4.0)
    rotation = pose[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(pose[:3, 2], [0, 0, -1])
    np.testing.assert_allclose(pose[:3, 1], np.array([0.2, 1.0, 0.0]) / np.hypot(0.2, 1.0))
    np.testing.assert_allclose(pose[:3, 0], np.cross(pose[:3, 1], pose[:3, 2]))
    np.testing.assert_allclose(pose[:3, 3], [10.0, 20.0, 84.0])
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
    check_coil_to_ras(pose)


def test_segments_placed_in_ras():
    coil = load_coil("figure8_70mm")
    pose = coil_pose([0.0, 0.0, 90.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0])
    segments = coil.segments_ras_mm(pose)
    # the winding plane sits 4 mm above the scalp point, the wings along RAS -y/+y (coil x = y x z)
    np.testing.assert_allclose(segments[..., 2], 94.0)
    np.testing.assert_allclose(pose[:3, 0], [0.0, 1.0, 0.0], atol=1e-12)
    assert segments[..., 1].max() == pytest.approx(97.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"normal_into_head": [0, 0, 0]}, "zero vector"),
        ({"handle_direction": [0, 0, 3]}, "parallel"),
        ({"handle_direction": [0, 0, 0]}, "zero vector"),
        ({"center_ras": [0, np.nan, 0]}, "finite"),
        ({"scalp_offset_mm": -1.0}, "scalp_offset_mm"),
    ],
)
def test_coil_pose_rejects_bad_input(kwargs, match):
    args = {"center_ras": [0, 0, 0], "normal_into_head": [0, 0, 1], "handle_direction": [0, 1, 0]}
    args.update(kwargs)
    offset = args.pop("scalp_offset_mm", 4.0)
    with pytest.raises(ValueError, match=match):
        coil_pose(args["center_ras"], args["normal_into_head"], args["handle_direction"], scalp_offset_mm=offset)


def _with_rotation(rotation):
    pose = np.eye(4)
    pose[:3, :3] = rotation
    return pose


@pytest.mark.parametrize(
    ("pose", "match"),
    [
        (_with_rotation(np.diag([2.0, 1.0, 1.0])), "orthonormal"),
        (_with_rotation([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "orthonormal"),
        (_with_rotation(np.diag([1.0, 1.0, -1.0])), "determinant"),
        (np.eye(3), "4x4"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]), "last row"),
    ],
)
def test_check_coil_to_ras_rejects(pose, match):
    with pytest.raises(ValueError, match=match):
        check_coil_to_ras(pose)


def test_coil_pose_files_are_read_as_text_or_json(tmp_path):
    pose = coil_pose([10.0, -20.0, 70.0], [0.2, 0.1, -1.0], [0.0, 1.0, 0.3])
    text = tmp_path / "coil_to_ras.txt"
    np.savetxt(text, pose)  # as the Slicer panel exports it
    commas = tmp_path / "pose.csv"
    lines = [",".join(repr(float(value)) for value in row) + "  # row" for row in pose]
    commas.write_text("# coil frame -> RAS, mm\n" + "\n".join(lines) + "\n")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(pose.tolist()))
    sidecar = tmp_path / "efield.json"
    sidecar.write_text(json.dumps({"coil_to_ras": pose.tolist(), "didt_a_per_s": 1e8}))
    simnibs = tmp_path / "simnibs.json"
    simnibs.write_text(json.dumps({"matsimnibs": pose.tolist()}))
    for path in (text, commas, rows, sidecar, simnibs):
        np.testing.assert_allclose(read_coil_to_ras(path), pose, atol=1e-15, err_msg=str(path))


@pytest.mark.parametrize("decimals", [3, 4])
def test_a_rounded_pose_is_taken_as_the_nearest_rotation(tmp_path, caplog, decimals):
    """Poses printed with 3-4 decimals (neuronavigation exports, SimNIBS logs) are not quite orthonormal."""
    pose = coil_pose([-58.64, -15.18, 69.21], [0.7749, -0.004, -0.6321], [-0.3396, -0.846, -0.411])
    path = tmp_path / "rounded.txt"
    np.savetxt(path, pose.round(decimals))
    with caplog.at_level("INFO", logger="CondNetLogic.coil"):
        read = read_coil_to_ras(path)
    assert "off orthonormal (rounded values?); using the nearest rotation" in caplog.text
    np.testing.assert_allclose(read[:3, :3].T @ read[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(read, pose, atol=2 * 10.0**-decimals)
    sheared = pose.copy()
    sheared[:3, 0] *= 1.01  # a 1 % stretch is not rounding
    np.savetxt(path, sheared)
    with pytest.raises(ValueError, match="not orthonormal"):
        read_coil_to_ras(path)


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n", "short.txt", "4x4 matrix; got shape \\(3, 4\\)"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 x\n0 0 0 1\n", "word.txt", "could not convert"),
        ("1 0 0 0\n0 1 0 0\n0 0 -1 0\n0 0 0 1\n", "mirror.txt", "determinant"),
        ("1 0 0 0\n0 1 0\n0 0 1 0\n0 0 0 1\n", "ragged.txt", "not a 4x4 coil pose"),
        ('{"pose": [[1, 0, 0, 0]]}', "other.json", "under 'coil_to_ras' or 'matsimnibs'"),
        ('{"coil_to_ras": [[1, 0, 0, 0]', "cut.json", "not a 4x4 coil pose"),
    ],
)
def test_bad_coil_pose_files_raise(tmp_path, content, name, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as raised:
        read_coil_to_ras(path)
    assert str(path) in str(raised.value)
    with pytest.raises(FileNotFoundError):
        read_coil_to_ras(tmp_path / "missing.txt")
