"""The condnet command line: dispatch, convert, info, errors to stderr with a non-zero status."""
import json
import re

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.conductivity import TABLE_A
from CondNetLogic.io import read_volume, write_volume
from CondNetLogic.volume import Volume
from _condnet_data import nifti_space, set_nifti_space


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "convert" in out
    assert "info" in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "convert" in info["commands"]
    assert info["versions"]["numpy"] == np.__version__
    assert isinstance(info["cpu_bfloat16"], bool)
    shipped = {entry["id"]: entry for entry in info["weights"]}
    assert shipped["condnet-t1t2-A"]["tables"] == ["A"]
    assert shipped["condnet-t1t2-A"]["inputs"] == ["t1", "t2"]
    assert shipped["condnet-t1t2-A"]["default"] == "default"
    assert shipped["condnet-t1-A"]["default"] == "default without a T2"
    assert main(["info"]) == 0
    assert re.search(r"weights: .*condnet-t1t2-A \S+ \(T1 \+ T2, table A, default\)", capsys.readouterr().out)


def test_convert_writes_conductivity_on_label_grid(tmp_path, capsys):
    affine = np.array([[-1.0, 0, 0, 10], [0, 0, 1, -5], [0, -1, 0, 3], [0, 0, 0, 1]])  # L-I-A
    labels = Volume(np.array([[[0, 2], [3, 24]]], dtype=np.int16), affine)
    write_volume(labels, tmp_path / "labels.nii.gz")
    set_nifti_space(tmp_path / "labels.nii.gz", 4)
    assert main(["convert", "--labels", str(tmp_path / "labels.nii.gz"), "--out", str(tmp_path / "s.nii")]) == 0
    assert nifti_space(tmp_path / "s.nii") == (4, 4)  # the label map's space (MNI152)
    out = tmp_path / "sigma.nrrd"
    assert main(["convert", "--labels", str(tmp_path / "labels.nii.gz"), "--out", str(out)]) == 0
    sigma = read_volume(out)
    np.testing.assert_allclose(sigma.ijk_to_ras, affine, atol=1e-6)
    expected = [[[0.0, TABLE_A.values["wm"]], [TABLE_A.values["gm"], TABLE_A.values["csf"]]]]
    np.testing.assert_allclose(sigma.array, expected, rtol=1e-6)
    # A second run refuses to overwrite and says so on stderr.
    assert main(["convert", "--labels", str(tmp_path / "labels.nii.gz"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_convert_unmapped_label_fails_cleanly(tmp_path, capsys):
    write_volume(Volume(np.full((2, 2, 2), 777, dtype=np.int16), np.eye(4)), tmp_path / "l.nii.gz")
    code = main(["convert", "--labels", str(tmp_path / "l.nii.gz"), "--out", str(tmp_path / "s.nii.gz")])
    assert code == 2
    assert "777" in capsys.readouterr().err
    assert not (tmp_path / "s.nii.gz").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--table", "C", "conductivity table 'C' is neither 'A', 'B' nor an existing"),
        ("--table", "DIR", "is neither 'A', 'B' nor an existing"),
        ("--mapping", "foo", "label mapping 'foo' is neither 'synthseg' nor 'samseg' nor an existing CSV"),
    ],
)
def test_convert_names_an_unknown_table_or_mapping(tmp_path, capsys, option, value, message):
    write_volume(Volume(np.ones((2, 2, 2), dtype=np.int16), np.eye(4)), tmp_path / "l.nii.gz")
    value = str(tmp_path) if value == "DIR" else value
    code = main(["convert", "--labels", str(tmp_path / "l.nii.gz"), "--out", str(tmp_path / "s.nii.gz"), option,
                 value])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.nii.gz").exists()


def test_unknown_option_exits_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--bogus"])
    assert exc.value.code == 2


def test_ctrl_c_is_a_short_message_not_a_traceback(monkeypatch, capsys):
    from CondNetLogic.commands import info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "condnet info: interrupted\n"


def test_resample_makes_an_anisotropic_conductivity_isotropic(tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    sigma = Volume(np.full((8, 8, 4), 0.3, dtype=np.float32), affine)
    write_volume(sigma, tmp_path / "sigma.nii.gz")
    set_nifti_space(tmp_path / "sigma.nii.gz", 2)
    out = tmp_path / "sigma_1mm.nii.gz"
    argv = ["resample", "--input", str(tmp_path / "sigma.nii.gz"), "--out", str(out), "--interpolation", "nearest"]
    assert main(argv) == 0
    resampled = read_volume(out)
    assert nifti_space(out) == (2, 2)  # the input's space (aligned)
    assert resampled.shape == (8, 8, 12)
    np.testing.assert_allclose(resampled.spacing, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(resampled.array, 0.3)
    # The outer faces of the field of view stay where they were (first voxel centre 1 mm lower along S).
    np.testing.assert_allclose(resampled.ijk_to_ras[:3, 3], [0.0, 0.0, -1.0])
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_resample_takes_the_spacing_and_the_interpolation(tmp_path):
    """--spacing 0.5 gives 0.5 mm voxels; --interpolation nearest keeps the label values (linear would blend them)."""
    labels = np.full((6, 4, 4), 2.0, dtype=np.float32)
    labels[3:] = 7.0
    write_volume(Volume(labels, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "labels.nii.gz")
    out = tmp_path / "labels_half.nii.gz"
    assert main(["resample", "--input", str(tmp_path / "labels.nii.gz"), "--out", str(out), "--spacing", "0.5",
                 "--interpolation", "nearest"]) == 0
    resampled = read_volume(out)
    np.testing.assert_allclose(resampled.spacing, [0.5, 0.5, 0.5])
    assert resampled.shape == (24, 16, 16)
    assert set(np.unique(resampled.array).tolist()) == {2.0, 7.0}


def test_precision_choices_are_the_inference_ones():
    import argparse

    from CondNetLogic.commands._network_options import add_network_arguments
    from CondNetLogic.inference import PRECISIONS

    parser = argparse.ArgumentParser()
    add_network_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "precision")
    assert tuple(action.choices) == PRECISIONS


def test_log_records_go_above_the_progress_bar_not_onto_its_line(capsys):
    import logging
    import sys

    from CondNetLogic.commands._progress import ProgressBar

    console = logging.StreamHandler(sys.stderr)  # the console handler basicConfig gives the CLI
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(console)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with ProgressBar("predict") as bar:
            bar(0.5, "half way")
            logging.getLogger("CondNetLogic.test").info("a message")
        logging.getLogger("CondNetLogic.test").info("after the bar")
        assert root.handlers[-1] is console  # the console handler is back once the bar is closed
    finally:
        root.removeHandler(console)
        root.setLevel(old_level)
    pieces = re.split(r"[\r\n]", capsys.readouterr().err)
    assert "INFO CondNetLogic.test: a message" in pieces  # a line of its own, not glued to the bar's
    assert "INFO CondNetLogic.test: after the bar" in pieces


def test_info_describes_one_coil(tmp_path, capsys):
    assert main(["info", "--coil", "figure8_70mm"]) == 0
    out = capsys.readouterr().out
    assert "winding: figure8_spiral, 1154 segments" in out
    assert "size: 194.0 x 94.2 mm" in out  # two 97 mm wings side by side
    assert "(100 A/us)" in out
    assert "warning" not in out  # the wires lie in z = 0
    ccd = tmp_path / "pair.ccd"
    ccd.write_text("# pair;dIdtmax=150\n2\n0.01 0 -0.003 0 0 1e-4\n-0.01 0.02 -0.005 0 0 -1e-4\n")
    assert main(["info", "--coil", str(ccd), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["winding"], summary["segments"], summary["dipoles"]) == ("dipoles", 0, 2)
    np.testing.assert_allclose(summary["extent_mm"], [[-10, 10], [0, 20], [-5, -3]])  # m -> mm
    assert summary["didt_max_a_per_s"] == pytest.approx(1.5e8)
    ccd.write_text("# Magstim_70mm_Fig8.ccd version 1.0 number of elements\n1\n0.01 0 0.006 0 0 1e-4\n")
    assert main(["info", "--coil", str(ccd)]) == 0
    out = capsys.readouterr().out
    assert "maximum dI/dt: not given by the file (condnet efield needs --didt A/s with this coil)" in out
    assert "warning: sources reach z = +6.0 mm, beyond the coil centre towards the head" in out
    metres = tmp_path / "metres.json"
    metres.write_text(json.dumps({"format_version": 1, "name": "metres", "didt_max_a_per_s": 1e8, "winding": {
        "type": "polylines", "polylines_mm": [[[0, 0, 0], [0.05, 0, 0], [0.05, 0.05, 0], [0, 0, 0]]]}}))
    assert main(["info", "--coil", str(metres)]) == 0
    assert "coordinates in metres?" in capsys.readouterr().out
    assert main(["info", "--coil", "no_such_coil"]) == 2
    assert "no coil file or coil named 'no_such_coil'" in capsys.readouterr().err


def test_info_gives_a_coils_field_in_a_spherical_head(capsys):
    from CondNetLogic.coil import load_coil
    from CondNetLogic.coil_metrics import sphere_metrics

    assert main(["info", "--coil", "figure8_70mm", "--sphere", "--scalp-offset", "6", "--json"]) == 0
    sphere = json.loads(capsys.readouterr().out)["sphere"]
    assert sphere == sphere_metrics(load_coil("figure8_70mm"), offset_mm=6.0).to_dict()
    assert main(["info", "--coil", "figure8_70mm", "--sphere"]) == 0
    out = capsys.readouterr().out
    assert "coil origin 4 mm above the scalp" in out
    assert re.search(r"below the coil centre: 1\.\d+ V/m per A/us \(1\d\d\.\d V/m at the maximum dI/dt\)", out)
    assert re.search(r"half-value depth below the cortex: \d+\.\d mm; half-value area on the cortex: \d+\.\d cm", out)
    assert main(["info", "--sphere"]) == 2
    assert "add --coil NAME_OR_FILE" in capsys.readouterr().err
    assert main(["info", "--coil", "figure8_70mm", "--scalp-offset", "10"]) == 2  # would be ignored
    assert "add --sphere" in capsys.readouterr().err


def test_predict_refuses_tables_whose_outputs_share_a_file_name(tmp_path):
    from CondNetLogic.commands.predict import output_paths

    paths = output_paths(str(tmp_path / "sigma.nii.gz"), ["A", "B"], ("axial",))
    assert paths["uncertainty"]["B"].name == "sigma_B_sd.nii.gz"
    with pytest.raises(ValueError, match=r"sigma_sd.nii.gz.*rename a table"):
        output_paths(str(tmp_path / "sigma.nii.gz"), ["A", "sd"])  # table sd would be table A's uncertainty
    with pytest.raises(ValueError, match="sigma_axial.nii.gz"):
        output_paths(str(tmp_path / "sigma.nii.gz"), ["A", "axial"], ("axial",))
