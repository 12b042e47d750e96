"""SimNIBS 4 ``.tcd`` coil definition files: line elements, dipoles, encodings, deformations and bad files."""
from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest

from CondNetLogic.coil import Coil, coil_file, list_coils, load_coil
from CondNetLogic.primary_field import dadt_at_points


def _encode(array, encoding: str):
    """An array as a ``.tcd`` file stores it: a list (ascii), base64 float64, or zlib-compressed base64 float64."""
    array = np.asarray(array, dtype="<f8")
    if encoding == "ascii":
        return array.tolist()
    raw = array.tobytes()
    return base64.b64encode(zlib.compress(raw) if encoding == "zlib" else raw).decode("ascii")


def _line_elements(polylines):
    """SimNIBS line elements of wire polylines: segment midpoints and segment vectors (mm), as LineSegmentElements."""
    starts = np.concatenate([line[:-1] for line in polylines])
    ends = np.concatenate([line[1:] for line in polylines])
    return 0.5 * (starts + ends), ends - starts


def _tcd(path, elements, *, max_didt=1e8, extra=None):
    data = {"name": "Test coil", "brand": "Acme", "version": "V2",
            "stimulatorList": [{"name": "Stim", "maxdIdt": max_didt}], "coilElementList": elements, **(extra or {})}
    path.write_text(json.dumps(data))
    return path


def _element(kind, points, values, encoding="ascii", **more):
    return {"name": f"element {kind}", "stimulator": 0, "type": kind,
            "points": _encode(points, encoding), "values": _encode(values, encoding), **more}


@pytest.mark.parametrize("encoding", ["ascii", "base64", "zlib"])
def test_line_elements_of_a_wire_coil_give_the_same_wires(tmp_path, encoding):
    wire = load_coil("figure8_70mm")
    points, values = _line_elements(wire.polylines_mm)
    coil = load_coil(_tcd(tmp_path / "fig8.tcd", [_element(2, points, values, encoding)]))
    assert coil.name == "fig8"
    assert coil.description == "Acme Test coil V2"
    assert coil.didt_max == 1e8  # maxdIdt is in A/s
    assert coil.winding["type"] == "polylines"
    assert len(coil.polylines_mm) == len(wire.polylines_mm)  # consecutive segments joined again
    for ours, theirs in zip(coil.polylines_mm, wire.polylines_mm):
        np.testing.assert_allclose(ours, theirs, atol=1e-9)
    assert "1154 line elements as 2 polylines, 0 dipoles" in coil.notes[0]


def test_line_elements_agree_with_simnibs_midpoint_sampling(tmp_path):
    """SimNIBS: A = 1e-7 sum dl / |r - p| (mm / mm, T m per A).  Ours integrates each segment exactly."""
    wire = load_coil("figure8_70mm")
    points, values = _line_elements(wire.polylines_mm)
    coil = load_coil(_tcd(tmp_path / "fig8.tcd", [_element(2, points, values)]))
    rng = np.random.default_rng(3)
    targets = rng.uniform([-60, -60, 15], [60, 60, 80], size=(200, 3))  # 15-80 mm below the winding plane
    simnibs = 1e-7 * (values[None] / np.linalg.norm(targets[:, None] - points[None], axis=-1)[..., None]).sum(axis=1)
    ours = dadt_at_points(targets * 1e-3, coil.segments_mm() * 1e-3, 1.0)
    error = np.linalg.norm(ours - simnibs, axis=1).max() / np.linalg.norm(simnibs, axis=1).max()
    assert error < 1e-3  # measured 6.5e-4 (segments of 2.3-25 mm seen from >= 15 mm); 4 % if sampled at the start


def test_zero_length_line_elements_at_corners_are_left_out(tmp_path):
    """SimNIBS's own example coil has an element of zero length at each corner of its wire path (read 2026-11-28)."""
    square = np.array([[0.0, 0.0, -4.0], [20.0, 0.0, -4.0], [20.0, 20.0, -4.0], [0.0, 20.0, -4.0], [0.0, 0.0, -4.0]])
    points, values = _line_elements([square])
    corners = square[1:]  # a zero-length element after each side, as SimNIBS writes them
    points = np.concatenate([np.stack([p, c]) for p, c in zip(points, corners)])
    values = np.concatenate([np.stack([v, np.zeros(3)]) for v in values])
    coil = load_coil(_tcd(tmp_path / "corners.tcd", [_element(2, points, values, "zlib")]))
    assert len(coil.polylines_mm) == 1  # still one closed path
    np.testing.assert_allclose(coil.polylines_mm[0], square, atol=1e-12)
    assert "4 line elements of zero length (corners of the wire path) carry no current" in coil.notes[1]


def test_dipole_elements_are_read_like_a_ccd_file(tmp_path):
    positions = np.array([[10.0, 0.0, -2.0], [-10.0, 0.0, -2.0]])
    moments = np.array([[0.0, 0.0, 1.5e-4], [0.0, 0.0, -1.5e-4]])
    coil = load_coil(_tcd(tmp_path / "dip.tcd", [_element(1, positions, moments, "zlib")], max_didt=1.2e8))
    ccd = tmp_path / "dip.ccd"
    ccd.write_text("# dipoles;dIdtmax=120\n2\n" + "\n".join(
        " ".join(map(str, [*p * 1e-3, *m])) for p, m in zip(positions, moments)) + "\n")
    same = load_coil(ccd)
    assert coil.winding["type"] == "dipoles"
    assert "dipoles=2" in repr(coil)
    np.testing.assert_allclose(coil.dipole_positions_mm, same.dipole_positions_mm)
    np.testing.assert_array_equal(coil.dipole_moments_m2, same.dipole_moments_m2)
    assert coil.didt_max == pytest.approx(same.didt_max)


def test_deformations_apply_at_their_initial_values_in_order(tmp_path):
    """A 90 degree rotation about +z (right-handed), then a 5 mm shift along z; both .tcd deformation layouts."""
    element = _element(1, [[10.0, 0.0, 0.0]], [[1e-4, 0.0, 0.0]], deformations=[0, 1])
    ranges = {"deformList": [{"type": "rot2p", "point1": [0, 0, -3], "point2": [0, 0, 7], "deformRange": 0},
                             {"type": "z", "deformRange": 1}],
              "deformRangeList": [{"initial": 90.0, "range": [0, 180]}, {"initial": 5.0, "range": [0, 10]}]}
    inline = {"deformList": [{"type": "rot2p", "point1": [0, 0, -3], "point2": [0, 0, 7], "initial": 90.0,
                              "range": [0, 180]}, {"type": "z", "initial": 5.0, "range": [0, 10]}]}
    for layout in (ranges, inline):
        coil = load_coil(_tcd(tmp_path / "deformed.tcd", [element], extra=layout))
        np.testing.assert_allclose(coil.dipole_positions_mm, [[0.0, 10.0, 5.0]], atol=1e-12)
        np.testing.assert_allclose(coil.dipole_moments_m2, [[0.0, 1e-4, 0.0]], atol=1e-16)  # turned, not shifted
    reversed_order = {**element, "deformations": [1, 0]}
    around_x = {"deformList": [{"type": "rot2p", "point1": [0, 0, 0], "point2": [1, 0, 0], "initial": 90.0,
                                "range": [0, 90]}, {"type": "z", "initial": 5.0, "range": [0, 10]}]}
    coil = load_coil(_tcd(tmp_path / "deformed.tcd", [reversed_order], extra=around_x))
    np.testing.assert_allclose(coil.dipole_positions_mm, [[10.0, -5.0, 0.0]], atol=1e-12)  # shift, then turn
    # An axis off the origin: 90 degrees about the vertical line through (10, 0, 0) takes (20, 0, 0) to (10, 10, 0).
    off_axis = {"deformList": [{"type": "rot2p", "point1": [10, 0, 0], "point2": [10, 0, 1], "initial": 90.0,
                                "range": [0, 90]}]}
    coil = load_coil(_tcd(tmp_path / "deformed.tcd", [_element(1, [[20.0, 0.0, 0.0]], [[1e-4, 0.0, 0.0]],
                                                               deformations=[0])], extra=off_axis))
    np.testing.assert_allclose(coil.dipole_positions_mm, [[10.0, 10.0, 0.0]], atol=1e-12)


def test_line_elements_and_dipoles_together_make_a_mixed_coil(tmp_path):
    points, values = _line_elements([np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [5.0, 5.0, 0.0]]),
                                     np.array([[20.0, 0.0, 0.0], [25.0, 0.0, 0.0]])])
    elements = [_element(2, points, values, "base64"), _element(1, [[0.0, 0.0, -1.0]], [[0.0, 0.0, 1e-4]])]
    coil = load_coil(_tcd(tmp_path / "mixed.tcd", elements))
    assert coil.winding["type"] == "mixed"
    assert "segments=3, dipoles=1" in repr(coil)
    assert [len(line) for line in coil.polylines_mm] == [3, 2]  # the gap between the wires is kept
    again = load_coil(coil.to_file(tmp_path / "mixed.json"))  # the coil JSON form keeps both
    assert again.sha256 == coil.sha256
    np.testing.assert_array_equal(again.source_points_mm(), coil.source_points_mm())


def test_tcd_files_are_listed_by_name(tmp_path, monkeypatch):
    points, values = _line_elements(load_coil("figure8_70mm").polylines_mm)
    _tcd(tmp_path / "theirs.TCD", [_element(2, points, values, "zlib")])
    monkeypatch.setenv("CONDNET_COIL_DIR", str(tmp_path))
    assert "theirs" in list_coils()
    assert coil_file("theirs") == tmp_path / "theirs.TCD"
    assert load_coil("theirs").winding["type"] == "polylines"


@pytest.mark.parametrize("change", [lambda d: d["stimulatorList"][0].pop("maxdIdt"),
                                    lambda d: d["coilElementList"][0].pop("stimulator")])
def test_a_tcd_coil_without_maxdidt_has_no_maximum(tmp_path, change):
    """SimNIBS reads a stimulator without maxdIdt, and an element without a stimulator, as no maximum dI/dt."""
    data = {"stimulatorList": [{"name": "A", "maxdIdt": 1e8}], "coilElementList": _valid()}
    change(data)
    path = tmp_path / "open.tcd"
    path.write_text(json.dumps(data))
    coil = load_coil(path)
    assert coil.didt_max is None
    assert any("no maximum dI/dt" in note for note in coil.notes)


def _valid():
    return [_element(1, [[0.0, 0.0, -1.0]], [[0.0, 0.0, 1e-4]])]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(coilElementList=[]), "non-empty coilElementList"),
        (lambda d: d["coilElementList"][0].update(type=3), r"sampled A-field grid \(type 3\), which is not read"),
        (lambda d: d["coilElementList"][0].update(type=7), "has type 7"),
        (lambda d: d["coilElementList"][0].update(stimulator=1), r"stimulator 1 is not in stimulatorList \(1"),
        (lambda d: (d["stimulatorList"].append({"name": "B", "maxdIdt": 1e8}),
                    d["coilElementList"].append({**d["coilElementList"][0], "stimulator": 1})),
         "driven by 2 stimulators"),
        (lambda d: d["stimulatorList"][0].update(maxdIdt=-1.0), "maxdIdt must be a positive number"),
        (lambda d: d["stimulatorList"][0].update(maxdIdt="fast"), "maxdIdt must be a positive number"),
        (lambda d: d["coilElementList"][0].update(stimulator="0"), "stimulator '0' is not in stimulatorList"),
        (lambda d: d["coilElementList"].append({**d["coilElementList"][0], "stimulator": None}),
         r"driven by 2 stimulators \(\[0, None\]\)"),
        (lambda d: d["coilElementList"][0].update(points="not base64!"), "points: not valid base64"),
        (lambda d: d["coilElementList"][0].update(points=_encode([[0.0, 0.0, 1.0]], "zlib")[:-8]),
         "bytes are not float64"),
        (lambda d: d["coilElementList"][0].update(points=base64.b64encode(b"\0" * 20).decode()),
         "20 bytes are not float64"),
        (lambda d: d["coilElementList"][0].update(values=[[0, 0]]), r"values: expected a non-empty list"),
        (lambda d: d["coilElementList"][0].update(values=[[0, 0, "x"]]), "values: expected a list"),
        (lambda d: d["coilElementList"][0].update(points=[[0, 0, float("nan")]]), "non-finite"),
        (lambda d: d["coilElementList"][0].update(values=[[0, 0, 1], [0, 0, 1]]), "1 points but 2 values"),
        (lambda d: d["coilElementList"][0].update(type=2, values=[[0, 0, 0]]), "only line elements of zero length"),
        (lambda d: d["coilElementList"][0].update(deformations=[0]), r"deformation 0 is not in deformList \(0"),
        (lambda d: d["coilElementList"][0].update(deformations=0), "deformations: expected a list of indices"),
        (lambda d: (d.update(deformList=[{"type": "w", "initial": 1.0}]),
                    d["coilElementList"][0].update(deformations=[0])), "unknown deformation type 'w'"),
        (lambda d: (d.update(deformList=[{"type": "x", "deformRange": 2}]),
                    d["coilElementList"][0].update(deformations=[0])), "deformRange 2 is not an entry of"),
        (lambda d: (d.update(deformList=["x"]), d["coilElementList"][0].update(deformations=[0])),
         r"deformList\[0\]: expected an object"),
        (lambda d: (d.update(deformList={"0": 1}), d["coilElementList"][0].update(deformations=[0])),
         "deformList: expected a list of deformations; got dict"),
        (lambda d: (d.update(deformList=[{"type": "x", "deformRange": 0}], deformRangeList={"0": 1}),
                    d["coilElementList"][0].update(deformations=[0])), "deformRange 0 is not an entry of"),
        (lambda d: (d.update(deformList=[{"type": "rot2p", "initial": 9.0, "point1": [0, 0, 0], "point2": [0, 0, 0]}]),
                    d["coilElementList"][0].update(deformations=[0])), "two different finite points"),
        (lambda d: (d.update(deformList=[{"type": "x"}]), d["coilElementList"][0].update(deformations=[0])),
         "no numeric initial value"),
    ],
)
def test_malformed_tcd_files_raise(tmp_path, change, match):
    data = {"stimulatorList": [{"name": "A", "maxdIdt": 1e8}], "coilElementList": _valid()}
    change(data)
    path = tmp_path / "bad.tcd"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as raised:
        load_coil(path)
    assert str(path) in str(raised.value)


def test_a_tcd_file_that_is_not_json_raises(tmp_path):
    path = tmp_path / "cut.tcd"
    path.write_text('{"coilElementList": [{"type": 1,')
    with pytest.raises(ValueError, match="not a JSON coil definition file"):
        Coil.from_tcd(path)
    with pytest.raises(FileNotFoundError):
        Coil.from_tcd(tmp_path / "missing.tcd")
