"""Tests for CondNetLogic.evaluation: skin shell, per-tissue statistics, MAE, report files, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from CondNetLogic.conductivity import TABLE_A, TISSUE_INDEX, TISSUES, tissues_to_conductivity
from CondNetLogic.evaluation import (
    GROUPS,
    comparison_figure,
    evaluate_prediction,
    interior_of,
    markdown_table,
    skin_shell,
    write_report,
)
from CondNetLogic.inference import Prediction
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.volume import Volume

IDENTITY = {i: i for i in range(len(TISSUES))}


@pytest.fixture(scope="module")
def phantom():
    return make_head_phantom((64,) * 3, seed=4)


def fake_prediction(phantom, sigma, sd=None):
    """A Prediction holding ``sigma`` (S/m) on the phantom grid; head mask = labelled head."""
    t1 = phantom.t1
    head = (phantom.tissues.array > 0).astype(np.uint8)
    sd = np.zeros_like(sigma) if sd is None else sd
    return Prediction({"A": t1.with_array(sigma.astype(np.float32))}, {"A": t1.with_array(sd.astype(np.float32))},
                      t1.with_array(head), {"table_values": {"A": dict(TABLE_A.values)}})


def test_skin_shell_thickness_in_mm():
    head = np.zeros((40, 40, 40), bool)
    head[5:35, 5:35, 5:35] = True
    for spacing, depth, expected in (((1, 1, 1), 2.0, 2), ((0.5, 0.5, 0.5), 2.0, 4), ((1, 1, 1), 3.0, 3)):
        shell = skin_shell(head, spacing, depth)
        assert shell[20, 20, :20].sum() == expected  # layers along one axis, in voxels
        assert not (shell & ~head).any()
    # Slices thicker than twice the skin: the outermost layer is still skin, on every face.
    for spacing in ((1.0, 1.0, 3.0), (0.5, 0.5, 5.0)):
        shell = skin_shell(head, spacing, 2.0)
        assert shell[20, 20, :20].astype(int).tolist() == [0] * 5 + [1] + [0] * 14
        assert shell[:20, 20, 20].sum() == round(2.0 / spacing[0])
    # An air pocket inside the head is not its outside: no skin around it.
    pocket = head.copy()
    pocket[18:22, 18:22, 18:22] = False
    np.testing.assert_array_equal(skin_shell(pocket, (1, 1, 1), 2.0), skin_shell(head, (1, 1, 1), 2.0) & pocket)


@pytest.mark.parametrize("cut", [0, 20])
def test_skin_shell_in_the_head_box_equals_the_whole_volume_transform(phantom, cut):
    """The shell is computed in the head's box plus an air margin; the whole-volume transform agrees."""
    from scipy import ndimage

    head = (phantom.tissues.array > 0)[cut:]  # cut 20: the head touches the first face
    head[30:34, 10:14, 3:] = False  # a notch reaching into the head
    spacing = (1.0, 0.8, 1.2)
    full = ndimage.distance_transform_edt(ndimage.binary_fill_holes(head), sampling=spacing)
    expected = head & (full - 0.4 <= 2.0)
    np.testing.assert_array_equal(skin_shell(head, spacing, 2.0), expected)
    assert head[0].any() == bool(cut)


def test_uniform_prediction_has_zero_error(phantom):
    tissues = phantom.tissues.array.copy()
    shell = skin_shell(tissues > 0, phantom.t1.spacing)
    tissues[shell] = TISSUE_INDEX["skin"]
    uniform = tissues_to_conductivity(tissues, TABLE_A)
    evaluation = evaluate_prediction(fake_prediction(phantom, uniform), phantom.tissues, IDENTITY, t1=phantom.t1)
    table = evaluation.report["tables"]["A"]
    assert table["mae_condnet_vs_uniform"] == pytest.approx(0.0, abs=1e-7)
    head = tissues > 0
    assert table["mae_constant_vs_uniform"] == pytest.approx(np.abs(uniform[head] - uniform[head].mean()).mean())
    assert table["mae_constant_vs_uniform"] > 0.1
    assert set(table["groups"]) == set(GROUPS)
    for group, row in table["groups"].items():
        assert row["voxels"] > 0, group
        assert row["mae"] == pytest.approx(0.0, abs=1e-7)
        assert row["condnet_mean"] == pytest.approx(row["uniform_mean"], rel=1e-5)
    assert table["groups"]["CSF"]["condnet_mean"] == pytest.approx(2.0)
    assert table["groups"]["skull"]["table_values"] == {"cortical_bone": 0.02, "cancellous_bone": 0.08}
    assert evaluation.report["head"]["dice"] == pytest.approx(1.0)
    np.testing.assert_array_equal(evaluation.uniform["A"].array, uniform)


def test_known_offset_gives_known_mae_and_sd(phantom):
    rng = np.random.default_rng(0)
    head = phantom.tissues.array > 0
    tissues = phantom.tissues.array.copy()
    tissues[skin_shell(head, phantom.t1.spacing)] = TISSUE_INDEX["skin"]
    uniform = tissues_to_conductivity(tissues, TABLE_A)
    noise = np.where(head, rng.choice([-0.05, 0.05], size=head.shape), 0)
    report = evaluate_prediction(fake_prediction(phantom, uniform + noise), phantom.tissues, IDENTITY,
                                 t1=phantom.t1).report["tables"]["A"]
    assert report["mae_condnet_vs_uniform"] == pytest.approx(0.05, rel=1e-5)
    assert report["groups"]["WM"]["condnet_sd"] == pytest.approx(0.05, rel=0.05)
    head_info = {"voxels_labels": 1, "voxels_condnet_mask": 1, "dice": 1.0, "skin_depth_mm": 2.0}
    text = markdown_table({"head": head_info, "tables": {"A": report}})
    assert "| WM |" in text
    assert "0.0500 S/m" in text


def test_dice_and_uncertainty_are_over_the_labelled_head(phantom):
    """A CondNet mask holding half the labelled head: Dice 2 (n/2) / (n + n/2) = 2/3.  The uncertainty mean is
    over the labelled head only, whatever the sd outside it."""
    head = phantom.tissues.array > 0
    sigma = np.where(head, 0.3, 0.0)
    sd = np.where(head, 0.01, 1.0)
    prediction = fake_prediction(phantom, sigma, sd)
    half = head.copy()
    half.flat[np.flatnonzero(head)[1::2]] = False
    prediction.head_mask = phantom.t1.with_array(half.astype(np.uint8))
    report = evaluate_prediction(prediction, phantom.tissues, IDENTITY, t1=phantom.t1).report
    n, m = int(head.sum()), int(half.sum())
    assert report["head"]["voxels_condnet_mask"] == m
    assert report["head"]["dice"] == pytest.approx(2 * m / (n + m))
    assert report["head"]["dice"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["tables"]["A"]["uncertainty_mean_in_head"] == pytest.approx(0.01)


def _interior_by_hand(region: np.ndarray) -> np.ndarray:
    """Voxels whose six face neighbours are in ``region`` (zero-padded), by explicit neighbour shifts."""
    padded = np.pad(region, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for step in (-1, 1):
            inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return inner


def test_interior_mean_separates_border_blur_from_tissue_error(phantom):
    tissues = phantom.tissues.array.copy()
    tissues[skin_shell(tissues > 0, phantom.t1.spacing)] = TISSUE_INDEX["skin"]
    uniform = tissues_to_conductivity(tissues, TABLE_A)
    csf = tissues == TISSUE_INDEX["csf"]
    interior = _interior_by_hand(csf)
    assert 0 < interior.sum() < csf.sum()
    blurred = np.where(csf & ~interior, 1.0, uniform)  # CSF borders pulled halfway to GM, interiors exact
    report = evaluate_prediction(fake_prediction(phantom, blurred), phantom.tissues, IDENTITY,
                                 t1=phantom.t1).report["tables"]["A"]
    row = report["groups"]["CSF"]
    assert row["interior_voxels"] == int(interior.sum())
    assert row["interior_mean"] == pytest.approx(2.0)
    assert row["condnet_mean"] < 1.9
    assert report["groups"]["WM"]["interior_mean"] == pytest.approx(TABLE_A.values["wm"])
    head_info = {"voxels_labels": 1, "voxels_condnet_mask": 1, "dice": 1.0, "skin_depth_mm": 2.0}
    assert f"| 2.000 ({int(interior.sum())}) |" in markdown_table({"head": head_info, "tables": {"A": report}})


def test_interior_of_a_thin_layer_is_empty():
    layer = np.zeros((9, 9, 9), bool)
    layer[2:7, 2:7, 4] = True  # one voxel thick
    assert not interior_of(layer).any()
    layer[2:7, 2:7, 3:6] = True
    np.testing.assert_array_equal(interior_of(layer), _interior_by_hand(layer))
    assert interior_of(layer).sum() == 3 * 3 * 1


def test_errors(phantom):
    prediction = fake_prediction(phantom, np.zeros(phantom.t1.shape))
    with pytest.raises(ValueError, match="no head voxel"):
        evaluate_prediction(prediction, phantom.tissues.with_array(np.zeros(phantom.t1.shape, np.uint8)), IDENTITY,
                            t1=phantom.t1)
    with pytest.raises(ValueError, match="labels must be integers"):
        evaluate_prediction(prediction, phantom.tissues.with_array(np.full(phantom.t1.shape, 0.5)), IDENTITY,
                            t1=phantom.t1)
    other = make_head_phantom((72,) * 3, seed=4).t1
    with pytest.raises(ValueError, match="not on the T1 grid"):
        evaluate_prediction(prediction, phantom.tissues, IDENTITY, t1=other)


def test_report_files_and_overwrite(phantom, tmp_path):
    prediction = fake_prediction(phantom, tissues_to_conductivity(phantom.tissues.array, TABLE_A),
                                 sd=np.full(phantom.t1.shape, 0.01))
    evaluation = evaluate_prediction(prediction, phantom.tissues, IDENTITY, t1=phantom.t1)
    paths = write_report(evaluation, prediction, tmp_path, t1=phantom.t1, t2=phantom.t2)
    data = json.loads(paths["json"].read_text())
    assert data["tables"]["A"]["units"] == "S/m"
    assert "| CSF |" in paths["markdown"].read_text()
    assert paths["figure_A"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="outputs exist"):
        write_report(evaluation, prediction, tmp_path, t1=phantom.t1, t2=phantom.t2)


def test_evaluate_cli(phantom, tmp_path, capsys):
    import torch

    from CondNetLogic.cli import main
    from CondNetLogic.io import write_volume
    from CondNetLogic.network import CondNet, CondNetConfig
    from CondNetLogic.weights import save_weights

    config = CondNetConfig(depth=3)
    states = {d: CondNet(config).state_dict() for d in ("axial", "sagittal", "coronal")}
    weights = tmp_path / "w.safetensors"
    save_weights(weights, states, config=config, tables=[TABLE_A], tau=0.1,
                 input_spec={"channels": ["t1", "t2"], "size": 64, "spacing_mm": 1.0, "normalisation": "z"},
                 training={})
    for name, volume in (("t1", phantom.t1), ("t2", phantom.t2), ("labels", phantom.tissues)):
        write_volume(volume, tmp_path / f"{name}.nii.gz")
    mapping = tmp_path / "mapping.csv"
    mapping.write_text("label,tissue\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TISSUES)))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine runs two threads several times slower
    try:
        code = main(["evaluate", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t2.nii.gz"),
                     "--labels", str(tmp_path / "labels.nii.gz"), "--mapping", str(mapping), "--out",
                     str(tmp_path / "eval"), "--weights", str(weights), "--device", "cpu"])
    finally:
        torch.set_num_threads(previous)
    assert code == 0
    bar = capsys.readouterr().err  # the progress bar of the prediction, then of the report
    assert "sagittal network" in bar
    assert "evaluate: 100%" in bar
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["prediction"]["weights"]["sha256"]
    assert (tmp_path / "eval" / "comparison_A.png").exists()


def test_evaluate_cli_refuses_existing_outputs_before_predicting(tmp_path, monkeypatch, capsys):
    from CondNetLogic import inference
    from CondNetLogic.cli import main
    from CondNetLogic.io import write_volume

    out = tmp_path / "eval"
    out.mkdir()
    (out / "evaluation.json").write_text("{}")
    volume = Volume(np.full((4, 4, 4), 2, np.float32), np.eye(4))  # SynthSeg label 2: white matter
    for name in ("t1", "labels"):
        write_volume(volume, tmp_path / f"{name}.nii.gz")

    def never(*args, **kwargs):
        raise AssertionError("predict_conductivity ran although the inputs or outputs are refused")

    monkeypatch.setattr(inference, "predict_conductivity", never)
    command = ["evaluate", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t1.nii.gz"),
               "--labels", str(tmp_path / "labels.nii.gz"), "--mapping", "synthseg", "--out", str(out)]
    assert main(command) == 2
    assert "an output exists" in capsys.readouterr().err
    assert (out / "evaluation.json").read_text() == "{}"
    # A label map that does not fit is refused before the prediction too: an unmapped label, no overlap.
    write_volume(volume.with_array(np.full((4, 4, 4), 99, np.float32)), tmp_path / "unmapped.nii.gz")
    shifted = np.eye(4)
    shifted[0, 3] = 500.0  # 500 mm to the right of the T1
    write_volume(Volume(volume.array, shifted), tmp_path / "elsewhere.nii.gz")
    for labels, message in (("unmapped", "[99]"), ("elsewhere", "no head voxel on the T1 grid")):
        command[command.index("--labels") + 1] = str(tmp_path / f"{labels}.nii.gz")
        assert main([*command[:-1], str(tmp_path / f"eval_{labels}")]) == 2
        assert message in capsys.readouterr().err


def test_evaluation_with_a_table_that_lacks_a_reported_tissue():
    """Weights trained on a user table without vitreous humor / cerebellum (dataset.check_table_coverage allows it
    when the data holds none): the report lists no Table I value for them instead of raising KeyError."""
    tissues = np.zeros((12, 12, 12), np.int32)
    tissues[2:10, 2:10, 2:10] = TISSUE_INDEX["gm"]
    tissues[4:8, 4:8, 4:8] = TISSUE_INDEX["wm"]
    t1 = Volume.from_geometry(np.zeros(tissues.shape, np.float32), spacing=(1, 1, 1))
    values = {"gm": 0.1, "wm": 0.07, "skin": 0.1, "csf": 2.0, "cortical_bone": 0.02, "cancellous_bone": 0.08,
              "muscle": 0.3, "fat": 0.04}
    sigma = np.where(tissues > 0, 0.1, 0).astype(np.float32)
    prediction = Prediction({"mine": t1.with_array(sigma)}, {"mine": t1.with_array(np.zeros_like(sigma))},
                            t1.with_array((tissues > 0).astype(np.uint8)), {"table_values": {"mine": values}})
    evaluation = evaluate_prediction(prediction, t1.with_array(tissues), IDENTITY, t1=t1)
    rows = evaluation.report["tables"]["mine"]["groups"]
    assert rows["vitreous humor"]["voxels"] == 0
    assert rows["cerebellum"]["voxels"] == 0
    assert rows["GM"]["table_values"] == {"gm": 0.1}
    assert "| vitreous humor | 0 |" in markdown_table(evaluation.report)


def test_no_skin_at_the_edge_of_a_smaller_label_field_of_view():
    """Labels on a grid that covers only the upper part of the T1 (a cropped segmentation, 'any grid'): the plane
    where the label map ends is not the head's outside, so the brain there must not become skin."""
    n = 30
    ijk = np.indices((n,) * 3).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(ijk - 14.5, axis=-1) <= 13
    t1 = Volume.from_geometry(np.zeros((n,) * 3, np.float32), spacing=(1, 1, 1))
    full = np.where(ball, TISSUE_INDEX["gm"], 0).astype(np.int32)
    cropped = Volume.from_geometry(full[:, :, 12:], spacing=(1, 1, 1), origin=(0, 0, 12))
    sigma = np.where(ball, 0.1, 0).astype(np.float32)
    prediction = Prediction({"A": t1.with_array(sigma)}, {"A": t1.with_array(np.zeros_like(sigma))},
                            t1.with_array(ball.astype(np.uint8)), {})
    evaluation = evaluate_prediction(prediction, cropped, IDENTITY, t1=t1)
    tissues = evaluation.tissues.array
    assert tissues[14, 14, 12] == TISSUE_INDEX["gm"]  # the centre of the cut plane is brain, not skin
    assert tissues[14, 14, 13] == TISSUE_INDEX["gm"]


def test_skin_shell_of_a_head_that_fills_the_grid():
    """No voxel of the grid is outside the head: the head goes on beyond the grid on every side, so no skin
    (as for a face cut by the grid); not a patch in one corner."""
    shell = skin_shell(np.ones((6, 6, 6), bool), (1, 1, 1))
    assert not shell.any()


def test_comparison_figure_keeps_the_aspect_of_anisotropic_voxels(tmp_path, monkeypatch):
    """A 1 x 1 x 3 mm T1: sagittal and coronal slices are drawn with 3:1 pixel aspect (mm, not voxels)."""
    from matplotlib.axes import Axes

    shown = []
    imshow = Axes.imshow

    def spy(self, X, *args, **kwargs):
        image = imshow(self, X, *args, **kwargs)
        shown.append(self.get_aspect())
        return image

    monkeypatch.setattr(Axes, "imshow", spy)
    t1 = Volume.from_geometry(np.ones((20, 20, 8), np.float32), spacing=(1.0, 1.0, 3.0))
    comparison_figure(t1, None, t1, t1, t1.with_array(np.zeros((20, 20, 8), np.float32)), tmp_path / "f.png")
    # 4 images per row (T2 not given): axial, sagittal, coronal
    assert shown[0] == pytest.approx(1.0)
    assert shown[4] == pytest.approx(3.0)
    assert shown[8] == pytest.approx(3.0)


def test_a_tight_label_field_of_view_keeps_the_skin_on_its_other_sides():
    """Labels cropped to the head's box (1 voxel of air around it) and cut at the bottom: skin all around above."""
    n = 30
    ijk = np.indices((n,) * 3).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(ijk - 14.5, axis=-1) <= 13
    t1 = Volume.from_geometry(np.zeros((n,) * 3, np.float32), spacing=(1, 1, 1))
    full = np.where(ball, TISSUE_INDEX["gm"], 0).astype(np.int32)
    cropped = Volume.from_geometry(full[1:29, 1:29, 12:29], spacing=(1, 1, 1), origin=(1, 1, 12))
    sigma = np.where(ball, 0.1, 0).astype(np.float32)
    prediction = Prediction({"A": t1.with_array(sigma)}, {"A": t1.with_array(np.zeros_like(sigma))},
                            t1.with_array(ball.astype(np.uint8)), {})
    tissues = evaluate_prediction(prediction, cropped, IDENTITY, t1=t1).tissues.array
    reference = skin_shell(ball, (1, 1, 1))
    # Above the cut's reach (k >= 15) the shell is the whole ball's; the cut plane's centre is brain.
    np.testing.assert_array_equal(tissues[:, :, 15:] == TISSUE_INDEX["skin"], reference[:, :, 15:])
    assert tissues[14, 14, 12] == TISSUE_INDEX["gm"]
