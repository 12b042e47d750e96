"""E-field dosing (``CondNetLogic.dosing``, ``condnet dose``): the arithmetic, linearity in real solves, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.coil import coil_pose, load_coil
from CondNetLogic.dosing import RegionField, motor_equivalent_dose, read_region_field
from CondNetLogic.efield import EFieldSimulation
from CondNetLogic.io import write_volume
from CondNetLogic.metrics import roi_stats, spherical_roi
from test_efield import LIA, RADIUS_MM, SPACING_MM, _sphere

CENTRE = np.array([2.0, -3.0, 1.0])


def _field(e, didt, *, coil="a" * 64, didt_max=1e8, head="h", metric="mean", notes=()):
    return RegionField(e_v_per_m=e, didt=didt, metric=metric, coil_name="coil", coil_sha256=coil, didt_max=didt_max,
                       head=head, region="r", notes=list(notes))


def test_dose_by_hand():
    """30 V/m at 50 A/us in M1, threshold 40 % of 100 A/us: 24 V/m; the target gets 60 V/m at 100 A/us, so 120 % of
    24 V/m (28.8 V/m) needs 48 A/us: 48 % output, 120 % MT, and 120 % MT gives it 28.8 V/m."""
    motor, target = _field(30.0, 5e7), _field(60.0, 1e8)
    dose = motor_equivalent_dose(motor, motor.didt_at_percent(40.0), target, 120.0)
    assert dose.motor_threshold_e == pytest.approx(24.0)
    assert dose.wanted_e == pytest.approx(28.8)
    assert dose.didt == pytest.approx(4.8e7)
    assert dose.output_percent == pytest.approx(48.0)
    assert dose.percent_of_motor_threshold == pytest.approx(120.0)
    assert dose.target_e_at_same_percent == pytest.approx(28.8)
    assert dose.reachable
    assert dose.notes == []
    weaker = motor_equivalent_dose(motor, 4e7, _field(20.0, 1e8))  # a deeper target: 120 A/us, past the maximum
    assert weaker.didt == pytest.approx(1.2e8)
    assert weaker.percent_of_motor_threshold == pytest.approx(300.0)
    assert weaker.target_e_at_same_percent == pytest.approx(8.0)
    assert not weaker.reachable
    assert "cannot reach it: 120 %" in weaker.notes[-1]
    reversed_current = motor_equivalent_dose(_field(30.0, -5e7), 4e7, target)  # the sign of dI/dt does not matter
    assert reversed_current.didt == pytest.approx(motor_equivalent_dose(motor, 4e7, target).didt)


def test_exactly_the_maximum_output_is_reachable():
    """100 % is the stimulator's maximum, also when the ratios round it to 100.00000000000001."""
    assert _field(30.0, 5e7).didt_at_percent(100.0) == 1e8
    exact = motor_equivalent_dose(_field(40.0, 1e8), 5e7, _field(20.0, 1e8))
    assert exact.output_percent == 100.0
    assert exact.reachable
    rounded = motor_equivalent_dose(_field(30.0, 5e7), 4e7, _field(24.0, 1e8))
    assert rounded.output_percent == pytest.approx(100.0, rel=1e-12)
    assert rounded.reachable
    assert rounded.notes == []
    beyond = motor_equivalent_dose(_field(30.0, 5e7), 4e7, _field(23.9, 1e8))
    assert not beyond.reachable


def test_different_coils_give_output_but_no_percent_of_threshold():
    dose = motor_equivalent_dose(_field(30.0, 5e7), 4e7, _field(60.0, 1e8, coil="b" * 64, didt_max=2e8))
    assert dose.didt == pytest.approx(4e7)
    assert dose.output_percent == pytest.approx(20.0)
    assert dose.percent_of_motor_threshold is None
    assert dose.target_e_at_same_percent is None
    assert "different coils" in dose.notes[0]
    no_max = motor_equivalent_dose(_field(30.0, 5e7), 4e7, _field(60.0, 1e8, coil="b" * 64, didt_max=None))
    assert no_max.output_percent is None
    assert no_max.reachable


@pytest.mark.parametrize(("motor", "target", "threshold", "percent", "match"), [
    (_field(30.0, 5e7), _field(60.0, 1e8, head="other"), 4e7, 100.0, "different conductivity maps"),
    (_field(30.0, 5e7), _field(60.0, 1e8, metric="p99"), 4e7, 100.0, "different statistics"),
    (_field(30.0, 5e7), _field(0.0, 1e8), 4e7, 100.0, "target region gets no field"),
    (_field(0.0, 5e7), _field(60.0, 1e8), 4e7, 100.0, "motor region gets no field"),
    (_field(30.0, 5e7), _field(60.0, 1e8), 0.0, 100.0, "non-zero dI/dt"),
    (_field(30.0, 5e7), _field(60.0, 1e8), 4e7, 0.0, "must be positive"),
])
def test_bad_doses_raise(motor, target, threshold, percent, match):
    with pytest.raises(ValueError, match=match):
        motor_equivalent_dose(motor, threshold, target, percent)


def test_bad_region_fields_raise():
    with pytest.raises(ValueError, match="no maximum dI/dt"):
        _field(30.0, 5e7, didt_max=None).didt_at_percent(40.0)
    with pytest.raises(ValueError, match=r"percentage in \(0, 100\]"):
        _field(30.0, 5e7).didt_at_percent(140.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        _field(30.0, 5e7, metric="max")
    with pytest.raises(ValueError, match="finite non-zero"):
        _field(30.0, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        _field(float("nan"), 5e7)


def test_the_dose_gives_the_wanted_field_when_solved():
    """The arithmetic rests on |E| being proportional to dI/dt: solving the target pose again at the dose's dI/dt
    gives the wanted field in the target ROI (the figure-8 coil over a 30 mm sphere, two poses, real solves)."""
    sphere = _sphere()
    coil = load_coil("figure8_70mm")
    simulation = EFieldSimulation(sphere, device="cpu", tol=1e-10, primary_field="direct")
    conducting = sphere.array > 0
    fields = {}
    for name, roi_centre, scalp_direction in (("motor", [0.0, 0.0, 15.0], [0.0, 0.0, 1.0]),
                                              ("target", [12.0, 0.0, 10.0], [0.6, 0.0, 0.8])):
        scalp = CENTRE + np.asarray(scalp_direction) * (RADIUS_MM + SPACING_MM / 2)
        pose = coil_pose(scalp, -np.asarray(scalp_direction), [0.0, 1.0, 0.0])
        roi = spherical_roi(sphere, CENTRE + roi_centre, 5.0) & conducting
        didt = 7e7 if name == "motor" else 1e8
        e = roi_stats(simulation.solve(coil, pose, didt).e_magnitude, roi)["mean"]
        fields[name] = (pose, roi, _field(e, didt, coil=coil.sha256, didt_max=coil.didt_max))
    dose = motor_equivalent_dose(fields["motor"][2], fields["motor"][2].didt_at_percent(55.0), fields["target"][2],
                                 110.0)
    pose, roi, _ = fields["target"]
    at_dose = roi_stats(simulation.solve(coil, pose, dose.didt).e_magnitude, roi)["mean"]
    assert at_dose == pytest.approx(dose.wanted_e, rel=1e-6)
    motor_pose, motor_roi, _ = fields["motor"]
    at_threshold = roi_stats(simulation.solve(coil, motor_pose, coil.didt_max * 0.55).e_magnitude, motor_roi)["mean"]
    assert dose.motor_threshold_e == pytest.approx(at_threshold, rel=1e-6)


# --------------------------------------------------------------------------------------------------------
# efield.json sidecars and condnet dose


@pytest.fixture
def runs(tmp_path):
    """Two condnet efield runs on one sphere: the coil over a 'motor' ROI at 50 % output and over a 'target'."""
    sigma = tmp_path / "sigma.nii.gz"
    write_volume(_sphere(LIA), sigma)
    common = ["--conductivity", str(sigma), "--device", "cpu", "--tol", "1e-4", "--handle-angle", "45",
              "--primary-field", "direct"]
    assert main(["efield", *common, "--target", "2", "-3", "16", "--mso", "50", "--out", str(tmp_path / "m1")]) == 0
    assert main(["efield", *common, "--target", "12", "-3", "13", "--out", str(tmp_path / "t")]) == 0
    return tmp_path


def test_read_region_field_takes_the_sidecar_roi(runs):
    sidecar = json.loads((runs / "m1" / "efield.json").read_text())
    motor = read_region_field(runs / "m1" / "efield.json", "p99")
    assert motor.e_v_per_m == sidecar["stats"]["roi"]["p99"]
    assert motor.metric == "p99"
    assert motor.didt == sidecar["didt_a_per_s"] == pytest.approx(0.5 * load_coil("figure8_70mm").didt_max)
    assert motor.didt_max == pytest.approx(load_coil("figure8_70mm").didt_max)
    assert motor.head == sidecar["conductivity"]["sha256"]
    assert motor.coil_sha256 == sidecar["coil"]["sha256"]
    assert motor.region == "5 mm around RAS (2.0, -3.0, 16.0)"
    assert motor.notes == []
    sidecar["solver"].update(converged=False, residual=3e-3)
    del sidecar["stats"]["roi"]
    path = runs / "edited.json"
    path.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="no ROI statistics: run condnet efield with --target, --roi-center"):
        read_region_field(path)
    sidecar["stats"]["roi"] = {"center_ras_mm": [1, 2, 3], "radius_mm": 5, "mean": 10.0}
    sidecar["didt_a_per_s"], sidecar["didt_percent_of_coil_max"] = -5e7, -50.0  # the current reversed
    path.write_text(json.dumps(sidecar))
    reversed_current = read_region_field(path)
    assert "relative residual of 0.003 above its tolerance" in reversed_current.notes[0]
    assert reversed_current.didt_max == pytest.approx(1e8)
    assert reversed_current.per_didt == pytest.approx(10.0 / 5e7)
    path.write_text(json.dumps({"stats": {}}))
    with pytest.raises(ValueError, match="not an efield.json written by condnet efield"):
        read_region_field(path)
    good = json.loads((runs / "m1" / "efield.json").read_text())
    for broken in ([], {**good, "stats": []}, {**good, "stats": {"roi": None, "whole": 1}},
                   {**good, "stats": {"roi": [1, 2]}}, {**good, "didt_a_per_s": "5e7"},
                   {**good, "solver": {"converged": False, "residual": "big"}},
                   {**good, "stats": {"roi": {**good["stats"]["roi"], "mean": None}}},
                   {**good, "stats": {"roi": {**good["stats"]["roi"], "center_ras_mm": 3}}},
                   {**good, "didt_percent_of_coil_max": 0}):
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="not an efield.json written by condnet efield|no ROI statistics"):
            read_region_field(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        read_region_field(path)


def test_cli_dose(runs, capsys):
    args = ["dose", "--motor", str(runs / "m1" / "efield.json"), "--target", str(runs / "t" / "efield.json"),
            "--motor-threshold", "40", "--percent", "120", "--out", str(runs / "dose.json")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    record = json.loads((runs / "dose.json").read_text())
    motor = json.loads((runs / "m1" / "efield.json").read_text())["stats"]["roi"]["mean"]
    target = json.loads((runs / "t" / "efield.json").read_text())["stats"]["roi"]["mean"]
    dose = record["dose"]
    assert dose["motor_threshold_e_v_per_m"] == pytest.approx(motor * 40 / 50)  # run at 50 %, threshold 40 %
    assert dose["output_percent_of_max"] == pytest.approx(1.2 * motor * 40 / 50 / target * 100)
    assert dose["percent_of_motor_threshold"] == pytest.approx(dose["output_percent_of_max"] / 40 * 100)
    assert f"{dose['output_percent_of_max']:.1f} % of the stimulator's maximum output" in printed
    assert record["metric"] == "mean"
    assert record["motor_threshold_percent_of_max"] == 40.0
    assert record["motor_threshold_didt_a_per_s"] == pytest.approx(0.4 * load_coil("figure8_70mm").didt_max)
    assert record["motor"]["didt_a_per_s"] == pytest.approx(0.5 * load_coil("figure8_70mm").didt_max)  # the run's
    assert main(args) == 2  # the record exists: kept
    assert "exists" in capsys.readouterr().err
    by_didt = ["dose", "--motor", str(runs / "m1" / "efield.json"), "--target", str(runs / "t" / "efield.json"),
               "--motor-threshold-didt", str(0.4 * load_coil("figure8_70mm").didt_max), "--percent", "120"]
    assert main(by_didt) == 0
    assert f"{dose['output_percent_of_max']:.1f} % of the stimulator's maximum output" in capsys.readouterr().out


def test_cli_dose_refuses_two_heads(runs, capsys):
    other = json.loads((runs / "t" / "efield.json").read_text())
    other["conductivity"]["sha256"] = "0" * 64
    (runs / "other.json").write_text(json.dumps(other))
    args = ["dose", "--motor", str(runs / "m1" / "efield.json"), "--target", str(runs / "other.json"),
            "--motor-threshold", "40", "--out", str(runs / "dose.json")]
    assert main(args) == 2
    assert "different conductivity maps" in capsys.readouterr().err
    assert not (runs / "dose.json").exists()
