"""The Slicer module's logic on a real MRML scene (slicer-core, no Qt): adapters, the whole workflow,
error paths that must leave the scene unchanged."""

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("torch")

import slicer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "CondNetSlicer"))

from CondNetLogic.conductivity import TISSUES  # noqa: E402
from CondNetLogic.errors import Cancelled, WeightsError  # noqa: E402
from CondNetLogic.phantom import make_head_phantom  # noqa: E402
from CondNetLogic.volume import Volume  # noqa: E402
from CondNetSlicerLib import adapters, testing  # noqa: E402
from CondNetSlicerLib.logic import ROLE, CondNetSlicerLogic  # noqa: E402


def relabel(volume: Volume, perm, flips) -> Volume:
    """The same voxels on re-ordered/flipped voxel axes: new axis d = old axis perm[d] (flipped if flips[d])."""
    array = np.transpose(volume.array, tuple(perm) + tuple(range(3, volume.array.ndim)))
    index_map = np.zeros((4, 4))
    index_map[3, 3] = 1.0
    for d, (old, flip) in enumerate(zip(perm, flips)):
        if flip:
            array = np.flip(array, axis=d)
            index_map[old, d] = -1.0
            index_map[old, 3] = volume.shape[old] - 1
        else:
            index_map[old, d] = 1.0
    return Volume(np.ascontiguousarray(array), volume.ijk_to_ras @ index_map)


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    return m


#: L-I-A voxel axes (as the SynthSeg maps), then tilted 15 degrees about an oblique axis, and shifted.
OBLIQUE = rotation([1.0, 0.3, 0.2], 15.0)
OBLIQUE[:3, 3] = [12.5, -7.0, 30.0]


@pytest.fixture(scope="module")
def head():
    phantom = make_head_phantom((48, 48, 48), seed=0, spacing_mm=1.25)

    def lia(volume):
        out = relabel(volume, (0, 2, 1), (True, True, False))
        return Volume(out.array, OBLIQUE @ out.ijk_to_ras)

    return {"t1": lia(phantom.t1), "t2": lia(phantom.t2), "tissues": lia(phantom.tissues)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return testing.makeTinyWeights(str(tmp_path_factory.mktemp("weights") / "tiny.safetensors"), size=64)


def add_volume(scene, volume, name, className=None):
    return adapters.addVolumeNode(scene, volume, name, className=className)


def check(condition, message):
    assert condition, message


def node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


# ------------------------------------------------------------------------------------------ adapters
def test_head_fixture_is_lia_and_oblique(head):
    from CondNetLogic._resample import closest_axes

    direction = head["t1"].direction
    assert not np.allclose(np.abs(direction), np.eye(3)[:, list(closest_axes(direction)[0])], atol=0.05)
    assert head["t1"].is_isotropic


def test_swap_ik_is_the_kji_order_of_array_from_volume(mrml_scene):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (I, J, K)
    node = add_volume(mrml_scene, Volume(array, np.diag([1.0, 2.0, 3.0, 1.0])), "v")
    assert node.GetImageData().GetDimensions() == (2, 3, 4)  # VTK: I fastest
    kji = slicer.util.arrayFromVolume(node)
    assert kji.shape == (4, 3, 2)
    assert kji[3, 2, 1] == array[1, 2, 3]
    np.testing.assert_array_equal(adapters.swapIK(kji), array)
    with pytest.raises(ValueError, match="3D"):
        adapters.swapIK(np.zeros((2, 2)))


@pytest.mark.parametrize("vector", [False, True])
def test_volume_round_trip_keeps_values_and_geometry(mrml_scene, head, vector):
    t1 = head["t1"]
    array = np.stack([t1.array, -t1.array, 2 * t1.array], axis=-1) if vector else t1.array
    node = add_volume(mrml_scene, t1.with_array(array), "rt")
    assert node.IsA("vtkMRMLVectorVolumeNode") == vector
    back = adapters.volumeFromNode(node)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.ijk_to_ras, t1.ijk_to_ras, atol=1e-12)
    # Voxel (i, j, k) sits where the affine says: compare with the node's own IJK->RAS.
    ijk = np.array([5, 17, 30, 1.0])
    np.testing.assert_allclose(adapters.ijkToRasFromNode(node) @ ijk, t1.ijk_to_ras @ ijk)
    assert back.array.flags.c_contiguous
    assert not np.shares_memory(back.array, slicer.util.arrayFromVolume(node))


def test_adapters_reject_bad_input(mrml_scene):
    with pytest.raises(ValueError, match="no volume selected"):
        adapters.volumeFromNode(None, what="T1")
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="no voxels"):
        adapters.volumeFromNode(empty)
    markup = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "m")
    with pytest.raises(TypeError, match="volume node"):
        adapters.volumeFromNode(markup)
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    before = mrml_scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="not orthogonal"):
        adapters.addVolumeNode(mrml_scene, Volume(np.zeros((2, 2, 2)), sheared), "sheared")
    scalar = add_volume(mrml_scene, Volume(np.zeros((2, 2, 2)), np.eye(4)), "s")
    with pytest.raises(TypeError, match="vector volume"):
        adapters.updateNodeFromVolume(scalar, Volume(np.zeros((2, 2, 2, 3)), np.eye(4)))
    assert mrml_scene.GetNumberOfNodes() == before + 2  # the scalar node and its display node, nothing else


def test_adapters_leave_no_nodes_behind_and_refuse_a_slight_shear(mrml_scene):
    """A failed add removes its node, removeNodes takes the display nodes too, and a slight shear is refused
    (the node would silently store another grid)."""
    before = node_ids(mrml_scene)
    with pytest.raises(TypeError, match="vector volume"):
        adapters.addVolumeNode(mrml_scene, Volume(np.zeros((2, 2, 2, 3)), np.eye(4)), "bad",
                               className="vtkMRMLScalarVolumeNode")
    assert node_ids(mrml_scene) == before
    node = add_volume(mrml_scene, Volume(np.ones((2, 2, 2)), np.eye(4)), "gone")
    assert node.GetNumberOfDisplayNodes() == 1
    adapters.removeNodes(mrml_scene, [None, node])
    assert node_ids(mrml_scene) == before
    slightlySheared = np.eye(4)
    slightlySheared[0, 1] = 0.01
    with pytest.raises(ValueError, match="not orthogonal"):
        adapters.addVolumeNode(mrml_scene, Volume(np.zeros((2, 2, 2)), slightlySheared), "sheared")


def test_world_to_local_follows_parent_transform(mrml_scene):
    node = add_volume(mrml_scene, Volume(np.ones((2, 2, 2)), np.eye(4)), "t")
    assert np.allclose(adapters.worldToLocalMatrix(node), np.eye(4))
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = rotation([0, 0, 1], 30)
    matrix[:3, 3] = [1, 2, 3]
    transform.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(adapters.worldToLocalMatrix(node), np.linalg.inv(matrix), atol=1e-12)


def test_relative_matrix_goes_from_the_first_node_through_world_to_the_second(mrml_scene):
    """T2 under A, T1 under B: T2's local RAS maps to T1's by inv(B) @ A (A @ inv(B) differs for these)."""
    a = rotation([0, 1, 0], 20)
    a[:3, 3] = [5.0, -3.0, 8.0]
    b = rotation([1, 0, 0], 15)
    b[:3, 3] = [-2.0, 6.0, 1.0]
    nodes = []
    for name, matrix in (("t2", a), ("t1", b)):
        node = add_volume(mrml_scene, Volume(np.ones((2, 2, 2)), np.eye(4)), name)
        transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        transform.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(matrix))
        node.SetAndObserveTransformNodeID(transform.GetID())
        nodes.append(node)
    assert not np.allclose(np.linalg.inv(b) @ a, a @ np.linalg.inv(b), atol=1e-3)
    np.testing.assert_allclose(CondNetSlicerLogic()._relativeMatrix(*nodes), np.linalg.inv(b) @ a, atol=1e-12)


# ------------------------------------------------------------------------------------------ workflow
def test_whole_workflow_on_an_oblique_lia_head(mrml_scene, head, weights, tmp_path):
    t1Node = add_volume(mrml_scene, head["t1"], "T1")
    t2Node = add_volume(mrml_scene, head["t2"], "T2")
    labels = add_volume(
        mrml_scene,
        head["tissues"].with_array(head["tissues"].array.astype(np.int16)),
        "labels",
        className="vtkMRMLLabelMapVolumeNode",
    )
    mapping = tmp_path / "identity.csv"
    mapping.write_text("label,tissue\n" + "".join(f"{i},{name}\n" for i, name in enumerate(TISSUES)))
    logic = CondNetSlicerLogic(mrml_scene)
    result = testing.runWorkflow(
        logic,
        t1Node,
        t2Node,
        str(tmp_path / "export"),
        check,
        weightsPath=weights,
        tables=("A", "B"),
        labelNode=labels,
        labelMapping=str(mapping),
    )
    stats = result["efield"]["stats"]
    assert set(stats) == {"head", "gm"}
    assert 0.0 <= stats["gm"]["ge_vs_uniform_percent"] <= 100.0
    # Exported files agree with the package reader too (RAS/LPS handled the same way by both stacks).
    from CondNetLogic.io import read_volume

    exported = read_volume(tmp_path / "export" / "efield_vector.nii.gz", allow_vector=True)
    np.testing.assert_allclose(exported.ijk_to_ras, head["t1"].ijk_to_ras, atol=1e-4)
    np.testing.assert_allclose(exported.array, adapters.volumeFromNode(result["efield"]["eVector"]).array)
    table = result["efield"]["table"]
    rows = {(table.GetCellText(r, 0), table.GetCellText(r, 1)) for r in range(table.GetNumberOfRows())}
    assert {("head", "p99"), ("gm", "p99"), ("gm", "ge_vs_uniform_percent"), ("head", "focality_mm3")} <= rows
    # The statistics are exported too: as CSV, and row by row in the export's JSON sidecar, with the numbers.
    import csv

    with open(tmp_path / "export" / "efield_statistics.csv", newline="", encoding="utf-8") as handle:
        exported_rows = list(csv.reader(handle))
    assert exported_rows[0] == ["Region", "Statistic", "Value", "Unit"]
    by_key = {(region, name): (float(value), unit) for region, name, value, unit in exported_rows[1:]}
    assert by_key[("gm", "p99")] == pytest.approx((stats["gm"]["p99"], "V/m"))
    assert by_key[("head", "focality_mm3")] == pytest.approx((stats["head"]["focality_mm3"], "mm^3"))
    sidecar = json.loads((tmp_path / "export" / "condnet_export.json").read_text())
    listed = sidecar["files"]["efield_statistics.csv"]
    assert listed["role"] == "efield-statistics"
    assert ["gm", "p99", stats["gm"]["p99"], "V/m"] in listed["rows"]


def test_outputs_follow_the_t1_parent_transform(mrml_scene, head, weights):
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(rotation([0, 1, 0], 20)))
    t1Node = add_volume(mrml_scene, head["t1"], "T1")
    t2Node = add_volume(mrml_scene, head["t2"], "T2")
    for node in (t1Node, t2Node):
        node.SetAndObserveTransformNodeID(transform.GetID())
    logic = CondNetSlicerLogic(mrml_scene)
    sigma = logic.estimateConductivity(t1Node, t2Node, weightsPath=weights, device="cpu", show=False)
    node = sigma["conductivity"]["A"]
    assert node.GetTransformNodeID() == transform.GetID()
    assert testing.sameGeometry(node, t1Node, atol=1e-9)


# ------------------------------------------------------------------------------------------ error paths
def test_failed_or_cancelled_steps_leave_the_scene_unchanged(mrml_scene, head, weights, tmp_path):
    t1Node = add_volume(mrml_scene, head["t1"], "T1")
    t2Node = add_volume(mrml_scene, head["t2"], "T2")
    logic = CondNetSlicerLogic(mrml_scene)
    before = node_ids(mrml_scene)
    with pytest.raises(Cancelled):
        logic.estimateConductivity(t1Node, t2Node, weightsPath=weights, device="cpu", cancel=lambda: True)
    with pytest.raises(WeightsError):
        logic.estimateConductivity(t1Node, t2Node, weightsPath=str(tmp_path / "missing.safetensors"), device="cpu")
    with pytest.raises(ValueError, match="not C"):
        logic.estimateConductivity(t1Node, t2Node, weightsPath=weights, tables=("C",), device="cpu")
    with pytest.raises(ValueError, match="T2"):
        logic.estimateConductivity(t1Node, None, weightsPath=weights, device="cpu")
    assert node_ids(mrml_scene) == before

    sigmaNode = logic.estimateConductivity(t1Node, t2Node, weightsPath=weights, device="cpu")["conductivity"]["A"]
    markup = logic.createCoilMarkup()
    before = node_ids(mrml_scene)
    coil = logic.coilNames()[0]
    with pytest.raises(ValueError, match="no point"):
        logic.coilToRas(markup, sigmaNode)
    centre = adapters.volumeFromNode(sigmaNode).ijk_to_ras_points(np.array([24.0, 24.0, 24.0]))
    markup.AddControlPointWorld(*centre, "coil")
    markup.SetNthControlPointOrientation(0, 90, 0, 0, 1)
    inside = logic.coilToRas(markup, sigmaNode)  # coil centre in the middle of the head
    before = node_ids(mrml_scene)
    with pytest.raises(ValueError, match="passes through the head"):
        logic.computeEField(sigmaNode, coil, inside, 1e8, device="cpu")
    with pytest.raises(ValueError, match="dI/dt"):
        logic.computeEField(sigmaNode, coil, inside, 0.0, device="cpu")
    with pytest.raises(ValueError, match="orthonormal"):
        logic.computeEField(sigmaNode, coil, np.diag([2.0, 1.0, 1.0, 1.0]), 1e8, device="cpu")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        logic.computeEField(sigmaNode, coil, inside, 1e8, device="cpu", eMagnitudeNode=t1Node)
    labels = head["tissues"]
    coarse = add_volume(
        mrml_scene,
        Volume(labels.array[::2, ::2, ::2].astype(np.int16), labels.ijk_to_ras @ np.diag([2, 2, 2, 1.0])),
        "coarse",
        className="vtkMRMLLabelMapVolumeNode",
    )
    before = node_ids(mrml_scene)
    logic.snapCoilMarkup(markup, sigmaNode)
    pose = logic.coilToRas(markup, sigmaNode)
    with pytest.raises(ValueError, match="not on the conductivity grid"):
        logic.computeEField(sigmaNode, coil, pose, 1e8, device="cpu", labelNode=coarse)
    # On the conductivity's grid, but moved 40 mm by a transform the conductivity is not under: refused too.
    aligned = add_volume(mrml_scene, Volume(labels.array.astype(np.int16), labels.ijk_to_ras), "moved labels",
                         className="vtkMRMLLabelMapVolumeNode")
    shift = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(np.array(
        [[1.0, 0, 0, 40.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])))
    aligned.SetAndObserveTransformNodeID(shift.GetID())
    before = node_ids(mrml_scene)
    with pytest.raises(ValueError, match="another transform"):
        logic.computeEField(sigmaNode, coil, pose, 1e8, device="cpu", labelNode=aligned)
    with pytest.raises(Cancelled):
        logic.computeEField(sigmaNode, coil, pose, 1e8, device="cpu", cancel=lambda: True)
    assert node_ids(mrml_scene) == before


def test_export_refuses_to_overwrite_and_writes_nothing(mrml_scene, tmp_path):
    logic = CondNetSlicerLogic(mrml_scene)
    node = add_volume(mrml_scene, Volume(np.ones((3, 4, 5), np.float32), OBLIQUE), "v")
    other = add_volume(mrml_scene, Volume(np.zeros((3, 4, 5), np.float32), OBLIQUE), "w")
    (tmp_path / "b.nrrd").write_text("user data")
    with pytest.raises(FileExistsError, match="b.nrrd"):
        logic.exportResults(str(tmp_path), {"a": node, "b": other}, extension=".nrrd")
    assert not (tmp_path / "a.nrrd").exists()
    assert (tmp_path / "b.nrrd").read_text() == "user data"
    written = logic.exportResults(str(tmp_path), {"a": node, "b": other}, extension=".nrrd", overwrite=True)
    assert [p.name for p in written] == ["a.nrrd", "b.nrrd", "condnet_export.json"]
    back = logic.readVolumeFile(str(tmp_path / "a.nrrd"), "back")
    assert testing.sameGeometry(back, node, atol=1e-9)
    with pytest.raises(ValueError, match="format"):
        logic.exportResults(str(tmp_path / "x"), {"a": node}, extension=".png")
    with pytest.raises(ValueError, match="nothing to export"):
        logic.exportResults(str(tmp_path / "x"), {})


def labelled_head(scene, head):
    """Conductivity (1 S/m in the head) and a landmarks node (Nz, Iz, LPA, RPA) on the phantom head."""
    from CondNetLogic import scalp

    tissues = head["tissues"]
    sigma = add_volume(scene, tissues.with_array((tissues.array > 0).astype(np.float32)), "sigma")
    mask = tissues.array > 0
    # Landmarks on the phantom: extremes of the head along its own R/A axes through the centre (RAS).
    centre = tissues.ijk_to_ras_points(np.argwhere(mask).mean(axis=0))
    marks = {}
    for label, direction in (("Nz", [0, 1, 0]), ("Iz", [0, -1, 0]), ("LPA", [-1, 0, 0]), ("RPA", [1, 0, 0])):
        marks[label] = scalp.scalp_point_along_ray(tissues.with_array(mask), centre, OBLIQUE[:3, :3] @ direction)
    landmarks = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "landmarks")
    for label, point in marks.items():
        landmarks.AddControlPointWorld(*point, label)
    return sigma, landmarks, marks


def test_coil_markup_and_eeg_preset_on_a_labelled_head(mrml_scene, head):
    logic = CondNetSlicerLogic(mrml_scene)
    tissues = head["tissues"]
    mask = tissues.array > 0
    sigma, landmarks, marks = labelled_head(mrml_scene, head)
    from CondNetLogic import scalp

    markup = logic.createCoilMarkup()
    assert markup.GetAttribute(ROLE) == "coil-markup"
    assert markup.GetMaximumNumberOfControlPoints() == 1
    point = logic.placeCoilAtPreset(markup, landmarks, sigma, "C3", handleAngleDeg=45.0)
    expected = scalp.eeg_position("C3", marks, tissues.with_array(mask))
    assert np.linalg.norm(point - expected) < 4.0  # snapping moves it by at most a few voxels
    assert abs(logic.coilHandleAngle(markup, sigma) - 45.0) < 1e-6
    # C3 is on the left: the coil normal points right (into the head), in the head's own frame.
    _, axes = logic._markupFrame(markup, sigma)
    assert (OBLIQUE[:3, :3].T @ axes[:, 2])[0] > 0.3


def test_the_coil_goes_on_the_head_not_on_stray_voxels_outside_it(mrml_scene, head):
    """A blob of conducting voxels 6 mm outside the scalp by C3 catches C3's arc, but not the coil."""
    from CondNetLogic import scalp

    logic = CondNetSlicerLogic(mrml_scene)
    tissues = head["tissues"]
    sigma, landmarks, marks = labelled_head(mrml_scene, head)
    expected = scalp.eeg_position("C3", marks, tissues.with_array(tissues.array > 0))
    volume = adapters.volumeFromNode(sigma)
    centre = scalp.head_centre(volume.with_array(volume.array > 0))
    outside = expected + 6.0 * (expected - centre) / np.linalg.norm(expected - centre)
    blob = np.rint(volume.ras_to_ijk_points(outside)).astype(int)
    array = volume.array.copy()
    array[tuple(slice(v - 1, v + 2) for v in blob)] = 0.3
    assert (array > 0).sum() - (volume.array > 0).sum() >= 20  # the blob lies in the grid, off the head
    assert np.linalg.norm(scalp.eeg_position("C3", marks, volume.with_array(array > 0)) - expected) > 4.0
    stray = add_volume(mrml_scene, volume.with_array(array), "sigma with stray voxels")
    point = logic.placeCoilAtPreset(logic.createCoilMarkup(), landmarks, stray, "C3", handleAngleDeg=45.0)
    assert np.linalg.norm(point - expected) < 4.0


def test_eeg_positions_as_a_point_list(mrml_scene, head):
    """Every 10-10 position, labelled, where scalp.eeg_positions puts it; refilled in place; a user's list is kept."""
    from CondNetLogic import scalp

    logic = CondNetSlicerLogic(mrml_scene)
    tissues = head["tissues"]
    sigma, landmarks, marks = labelled_head(mrml_scene, head)
    node = logic.showEegPositions(landmarks, sigma)
    labels = [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())]
    assert labels == list(scalp.EEG_1010)
    assert node.GetLocked()
    assert node.GetAttribute(ROLE) == "eeg-positions"
    expected = scalp.eeg_positions(["C3", "F3", "P4"], marks, tissues.with_array(tissues.array > 0))
    for name, point in expected.items():
        shown = np.zeros(3)
        node.GetNthControlPointPositionWorld(labels.index(name), shown)
        np.testing.assert_allclose(shown, point, atol=1e-6, err_msg=name)
    assert logic.showEegPositions(landmarks, sigma, node) is node
    assert node.GetNumberOfControlPoints() == len(scalp.EEG_1010)
    mine = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my points")
    made = logic.showEegPositions(landmarks, sigma, mine)
    assert made is not mine
    assert mine.GetNumberOfControlPoints() == 0


def test_a_saved_coil_pose_puts_the_coil_markup_back(mrml_scene, head, tmp_path):
    """Export's coil_to_ras.txt read back: the markup gives the same pose; a pose off this scalp is logged."""
    logic = CondNetSlicerLogic(mrml_scene)
    messages = []
    logic.logCallback = messages.append
    sigma, landmarks, _ = labelled_head(mrml_scene, head)
    placed = logic.createCoilMarkup()
    logic.placeCoilAtPreset(placed, landmarks, sigma, "C4", handleAngleDeg=30.0)
    pose = logic.coilToRas(placed, sigma, scalpOffsetMm=6.0)
    np.savetxt(tmp_path / "coil_to_ras.txt", pose)
    markup = logic.createCoilMarkup("loaded")
    distance = logic.placeCoilAtPose(markup, sigma, logic.readCoilPose(str(tmp_path / "coil_to_ras.txt")),
                                     scalpOffsetMm=6.0)
    np.testing.assert_allclose(logic.coilToRas(markup, sigma, scalpOffsetMm=6.0), pose, atol=1e-9)
    assert distance < 1.0  # the preset's point was on the scalp
    assert abs(logic.coilHandleAngle(markup, sigma) - 30.0) < 1e-6
    assert not messages
    away = pose.copy()
    away[:3, 3] -= 20.0 * pose[:3, 2]  # 20 mm further out along the normal
    assert abs(logic.placeCoilAtPose(markup, sigma, away, scalpOffsetMm=6.0) - 20.0) < 2.0
    assert "mm from this head's scalp" in messages[-1]
    with pytest.raises(ValueError, match="determinant"):
        logic.placeCoilAtPose(markup, sigma, np.diag([1.0, 1.0, -1.0, 1.0]))
    np.testing.assert_allclose(logic.coilToRas(markup, sigma, scalpOffsetMm=6.0), away, atol=1e-9)  # unchanged


def panel_default(field: str):
    """Default value of a CondNetSlicerParameterNode field, read from CondNetSlicer.py (it imports Qt)."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[2] / "CondNetSlicer" / "CondNetSlicer.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "CondNetSlicerParameterNode":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and item.target.id == field:
                    return ast.literal_eval(item.value)
    raise AssertionError(f"{field} not found")


def test_default_handle_angle_is_posterior_lateral_on_either_hemisphere(mrml_scene, head):
    """The panel's default 45 degrees is the usual motor-cortex orientation: handle posterior-lateral at
    45 degrees to the midline (the demo's (-1, -1, 0)/sqrt(2) at C3); lateral is -R on the left."""
    logic = CondNetSlicerLogic(mrml_scene)
    sigma, landmarks, _ = labelled_head(mrml_scene, head)
    default = panel_default("handleAngleDeg")
    assert default == 45.0
    markup = logic.createCoilMarkup()

    def handle_in_head_frame(position, angle):
        logic.placeCoilAtPreset(markup, landmarks, sigma, position, handleAngleDeg=angle)
        assert abs(logic.coilHandleAngle(markup, sigma) - angle) < 1e-6
        _, axes = logic._markupFrame(markup, sigma)
        return OBLIQUE[:3, :3].T @ axes[:, 1]  # (R, A, S) of the phantom's own axes

    handle = handle_in_head_frame("C3", default)
    assert handle[1] < -0.4, f"C3 handle {handle} is not posterior"
    assert handle[0] < -0.3, f"C3 handle {handle} is not lateral (-R)"
    handle = handle_in_head_frame("C4", default)
    assert handle[1] < -0.4, f"C4 handle {handle} is not posterior"
    assert handle[0] > 0.3, f"C4 handle {handle} is not lateral (+R)"
    handle = handle_in_head_frame("C3", -default)
    assert handle[1] < -0.4, f"C3 handle {handle} at -45 is not posterior"
    assert handle[0] > 0.2, f"C3 handle {handle} at -45 is not medial (+R)"
    handle = handle_in_head_frame("C3", 0.0)
    assert handle[1] < -0.9, f"C3 handle {handle} at 0 is not posterior"
    # The placeCoilAtPreset default is the panel's.
    logic.placeCoilAtPreset(markup, landmarks, sigma, "C3")
    assert abs(logic.coilHandleAngle(markup, sigma) - default) < 1e-6


def test_handle_angle_convention_in_the_tangent_plane():
    from CondNetSlicerLib import geometry

    # (outward normal, where +90 degrees points): away from the midline along the surface (at C3/C4 lateral and
    # down, at T7 straight down); on the midline (within 5 degrees) towards the subject's left.
    cases = (
        ([-1, 0, 1], [-1, 0, -1]),  # C3
        ([1, 0, 1], [1, 0, -1]),  # C4
        ([-1, 0, 0], [0, 0, -1]),  # T7
        ([0, 0, 1], [-1, 0, 0]),  # Cz
        ([0.03, 0, 1], [-1, 0, 0.03]),  # Cz, slightly right of the midline
    )
    for outward, expected in cases:
        normal = -np.asarray(outward, float) / np.linalg.norm(outward)
        for angle in (-170.0, -45.0, 0.0, 30.0, 45.0, 90.0, 180.0):
            handle = geometry.handleDirection(normal, angle)
            assert abs(np.dot(handle, normal)) < 1e-12
            assert np.isclose(np.linalg.norm(handle), 1.0)
            assert np.isclose(geometry.handleAngle(normal, handle), angle)
        np.testing.assert_allclose(geometry.handleDirection(normal, 0.0), [0, -1, 0], atol=1e-12)
        expected = np.asarray(expected, float) / np.linalg.norm(expected)
        np.testing.assert_allclose(geometry.handleDirection(normal, 90.0), expected, atol=1e-12)
    with pytest.raises(ValueError, match="zero length"):
        geometry.handleDirection([0, 0, 0], 45.0)


def test_placing_the_coil_never_reuses_another_point_list(mrml_scene, head):
    logic = CondNetSlicerLogic(mrml_scene)
    sigma, landmarks, marks = labelled_head(mrml_scene, head)

    def points(node):
        out = []
        for i in range(node.GetNumberOfControlPoints()):
            p = np.zeros(3)
            node.GetNthControlPointPositionWorld(i, p)
            out.append((node.GetNthControlPointLabel(i), tuple(p)))
        return out

    before = points(landmarks)
    made = logic.coilMarkupForPlacing(landmarks)  # the landmarks were selected as the coil markup
    assert made is not landmarks
    assert logic.isCoilMarkup(made)
    assert logic.coilMarkupForPlacing(made) is made
    assert logic.coilMarkupForPlacing(None) is not made
    for move in (
        lambda: logic.snapCoilMarkup(landmarks, sigma),
        lambda: logic.setCoilHandleAngle(landmarks, sigma, 10.0),
        lambda: logic.placeCoilAtPreset(landmarks, landmarks, sigma, "C3"),
    ):
        with pytest.raises(ValueError, match="not a CondNet coil markup"):
            move()
    with pytest.raises(ValueError, match="Place coil"):
        logic.placeCoilAtPreset(None, landmarks, sigma, "C3")
    assert points(landmarks) == before
    logic.placeCoilAtPreset(made, landmarks, sigma, "C3")
    assert made.GetNumberOfControlPoints() == 1


def test_place_coil_puts_the_views_in_place_mode_for_the_coil_markup(mrml_scene):
    """What 'Place coil' does, on the Markups module's real logic: the coil markup is emptied, made the node
    that clicks add points to, and the interaction node goes to single-point place mode.  Slicer's
    vtkSlicerMarkupsLogic.h has SetActiveList in newer releases and only SetActiveListID in older ones."""
    markupsLogic = slicer.vtkSlicerMarkupsLogic()
    markupsLogic.SetMRMLScene(mrml_scene)
    selection = mrml_scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    interaction = mrml_scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    # Both made by the application logic, as in Slicer.
    assert selection is not None
    assert interaction is not None

    logic = CondNetSlicerLogic(mrml_scene)
    markup = logic.createCoilMarkup()
    assert markup.GetControlPointLabelFormat() == "coil"
    markup.AddControlPointWorld(1.0, 2.0, 3.0, "coil")
    logic.startCoilPlacement(markup, markupsLogic)
    assert markup.GetNumberOfControlPoints() == 0
    assert selection.GetActivePlaceNodeID() == markup.GetID()
    assert selection.GetActivePlaceNodeClassName() == "vtkMRMLMarkupsFiducialNode"
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    assert not interaction.GetPlaceModePersistence()

    class OlderMarkupsLogic:  # a Slicer whose markups logic has only SetActiveListID
        def __init__(self, real):
            self.SetActiveListID, self.StartPlaceMode = real.SetActiveListID, real.StartPlaceMode

    interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    other = logic.createCoilMarkup()
    logic.startCoilPlacement(other, OlderMarkupsLogic(markupsLogic))
    assert selection.GetActivePlaceNodeID() == other.GetID()
    assert interaction.GetCurrentInteractionMode() == interaction.Place

    userList = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "targets")
    userList.AddControlPointWorld(0.0, 0.0, 0.0, "target")
    with pytest.raises(ValueError, match="not a CondNet coil markup"):
        logic.startCoilPlacement(userList, markupsLogic)
    assert userList.GetNumberOfControlPoints() == 1


def coil_over_head(scene, head):
    """``(logic, sigma, coil markup)``: 0.3 S/m in the phantom head, the coil snapped to the top of it."""
    logic = CondNetSlicerLogic(scene)
    tissues = head["tissues"]
    mask = tissues.array > 0
    sigma = add_volume(scene, tissues.with_array(np.where(mask, 0.3, 0.0).astype(np.float32)), "sigma")
    markup = logic.createCoilMarkup()
    markup.AddControlPointWorld(*(tissues.ijk_to_ras_points(np.argwhere(mask).mean(axis=0)) + [0.0, 0.0, 150.0]))
    logic.snapCoilMarkup(markup, sigma)
    return logic, sigma, markup


def test_an_unconverged_efield_solve_comes_back_with_a_warning(mrml_scene, head):
    import warnings

    logic, sigma, markup = coil_over_head(mrml_scene, head)
    coil, pose = logic.coilNames()[0], logic.coilToRas(markup, sigma)
    logged = []
    logic.logCallback = logged.append
    solved = logic.computeEField(sigma, coil, pose, 6e7, device="cpu", tol=1e-3, show=False)
    assert solved["warnings"] == []
    assert any("dI/dt = 6e+07 A/s (60 % of the coil file's maximum, 1e+08 A/s)" in line for line in logged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the solver's own warning
        short = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-20, show=False)
    assert len(short["warnings"]) == 1
    assert "above its tolerance 1e-20: the field may be inaccurate" in short["warnings"][0]
    assert short["eMagnitude"] is not None  # the field is still shown


def test_target_statistics_are_those_of_the_sphere_around_the_target(mrml_scene, head):
    """A target markup (world RAS) under a parent transform: |E| statistics of the conducting voxels near it."""
    from CondNetLogic.metrics import roi_stats, spherical_roi

    logic = CondNetSlicerLogic(mrml_scene)
    tissues = head["tissues"]
    mask = tissues.array > 0
    sigma = add_volume(mrml_scene, tissues.with_array(np.where(mask, 0.3, 0.0).astype(np.float32)), "sigma")
    shift = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(np.array(
        [[1.0, 0, 0, 7.0], [0, 1.0, 0, -5.0], [0, 0, 1.0, 3.0], [0, 0, 0, 1.0]])))
    sigma.SetAndObserveTransformNodeID(shift.GetID())
    markup = logic.createCoilMarkup()
    top = tissues.ijk_to_ras_points(np.argwhere(mask).mean(axis=0)) + [0.0, 0.0, 150.0]
    markup.AddControlPointWorld(*(top + [7.0, -5.0, 3.0]))
    logic.snapCoilMarkup(markup, sigma)
    coil, pose = logic.coilNames()[0], logic.coilToRas(markup, sigma)
    local = logic._markupFrame(markup, sigma)[0] - [0.0, 0.0, 8.0]  # 8 mm under the coil, in sigma's frame
    target = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "target")
    target.AddControlPointWorld(*(local + [7.0, -5.0, 3.0]))  # placed in the world, as a user clicks
    np.testing.assert_allclose(logic.targetPoint(target, sigma), local, atol=1e-9)
    assert logic.targetPoint(None, sigma) is None
    unplaced = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "unplaced target")
    unplaced.AddControlPoint(*local)
    unplaced.UnsetNthControlPointPosition(0)  # listed in the panel, not yet clicked
    assert logic.targetPoint(unplaced, sigma) is None
    mrml_scene.RemoveNode(unplaced)
    solved = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-3, show=False,
                                 targetRas=logic.targetPoint(target, sigma), targetRadiusMm=6.0)
    magnitude = adapters.volumeFromNode(solved["eMagnitude"])
    roi = spherical_roi(magnitude, local, 6.0) & mask
    expected = roi_stats(magnitude, roi)
    assert solved["warnings"] == []
    assert solved["stats"]["target"]["n_voxels"] == int(roi.sum()) > 0
    assert solved["stats"]["target"]["mean"] == pytest.approx(expected["mean"])
    assert solved["stats"]["target"]["max"] == pytest.approx(expected["max"])
    table = solved["table"].GetTable()
    regions = {table.GetValue(row, 0).ToString() for row in range(table.GetNumberOfRows())}
    assert "target" in regions
    far = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-3, show=False,
                              targetRas=local + [0.0, 0.0, 300.0], targetRadiusMm=6.0)
    assert "target" not in far["stats"]
    assert len(far["warnings"]) == 1
    assert "No conducting voxel lies within 6 mm around the target" in far["warnings"][0]


def test_strongest_pose_at_a_target(mrml_scene, head):
    """Each pose's target mean is that of a solve at that pose; the search moves towards an off-axis target."""
    logic, sigma, markup = coil_over_head(mrml_scene, head)
    coil, pose = logic.coilNames()[0], logic.coilToRas(markup, sigma)
    start = logic._markupFrame(markup, sigma)[0]
    target = start + [9.0, 0.0, -8.0]  # off the coil axis: the angle and the centre matter
    nodes = mrml_scene.GetNumberOfNodes()
    found = logic.strongestPose(sigma, coil, pose, 1e8, target, targetRadiusMm=5.0, anglesDeg=(0.0, 60.0, 120.0),
                                device="cpu", tol=1e-6)
    assert mrml_scene.GetNumberOfNodes() == nodes
    assert [row["angle"] for row in found["rows"]] == [0.0, 60.0, 120.0]
    np.testing.assert_allclose([row["centre"] for row in found["rows"]], [start] * 3, atol=1e-9)
    means = [row["mean"] for row in found["rows"]]
    assert found["angle"] == found["rows"][int(np.argmax(means))]["angle"]
    assert max(means) > 1.05 * min(means)
    logic.setCoilHandleAngle(markup, sigma, 60.0)
    solved = logic.computeEField(sigma, coil, logic.coilToRas(markup, sigma), 1e8, device="cpu", tol=1e-6, show=False,
                                 targetRas=target, targetRadiusMm=5.0)
    assert solved["stats"]["target"]["mean"] == pytest.approx(means[1], rel=1e-5)
    searched = logic.strongestPose(sigma, coil, pose, 1e8, target, targetRadiusMm=5.0, anglesDeg=(0.0,),
                                   searchRadiusMm=8.0, searchStepMm=8.0, device="cpu", tol=1e-6)
    rows = searched["rows"]
    assert len(rows) == 5  # the coil's point and four centres 8 mm away on the tangent plane
    np.testing.assert_allclose(rows[0]["centre"], start, atol=1e-9)
    best = int(np.argmax([row["mean"] for row in rows]))
    assert best != 0  # the target lies 9 mm to one side
    assert np.linalg.norm(np.array(rows[best]["centre"]) - target) < np.linalg.norm(start - target)
    np.testing.assert_allclose(searched["coilToRas"][:3, 3] + 4.0 * searched["coilToRas"][:3, 2], rows[best]["centre"],
                               atol=1e-9)
    with pytest.raises(ValueError, match="choose a target point"):
        logic.strongestPose(sigma, coil, pose, 1e8, None)
    with pytest.raises(ValueError, match="no conducting voxel lies within 5 mm around the target"):
        logic.strongestPose(sigma, coil, pose, 1e8, target + [0.0, 0.0, 300.0], device="cpu")


def test_a_label_map_as_target_region(mrml_scene, head):
    """A label map holding the 5 mm sphere around the target gives the sphere's target statistics, also when it lies
    under a transform (its array shifted to match) and on a finer grid; Best pose takes it without a target point."""
    from CondNetLogic.metrics import spherical_roi

    logic, sigma, markup = coil_over_head(mrml_scene, head)
    coil, pose = logic.coilNames()[0], logic.coilToRas(markup, sigma)
    start, axes = logic._markupFrame(markup, sigma)
    target = start + 11.0 * axes[:, 2]
    volume = adapters.volumeFromNode(sigma)
    sphere = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-6, show=False, targetRas=target,
                                 targetRadiusMm=5.0)["stats"]["target"]
    region = volume.with_array(spherical_roi(volume, target, 5.0).astype(np.uint8))
    moved = region.ijk_to_ras.copy()
    moved[0, 3] -= 10.0
    shifted = Volume(region.array, moved)  # the region 10 mm to the left, put back by its parent transform
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift right")
    shift = np.eye(4)
    shift[0, 3] = 10.0
    transform.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(shift))
    finer = Volume.from_geometry(np.zeros((60, 60, 60), np.uint8), spacing=(0.625,) * 3,
                                 origin=target - 29.5 * 0.625, direction=np.eye(3))
    finer = finer.with_array(spherical_roi(finer, target, 5.0).astype(np.uint8))  # same sphere, other lattice
    for name, labels, parent in (("same grid", region, None), ("transformed", shifted, transform),
                                 ("finer", finer, None)):
        node = adapters.addVolumeNode(mrml_scene, labels, name, className="vtkMRMLLabelMapVolumeNode",
                                      parentTransformNode=parent)
        solved = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-6, show=False, targetRegionNode=node)
        got = solved["stats"]["target"]
        if name != "finer":
            assert (got["n_voxels"], got["mean"]) == (sphere["n_voxels"], pytest.approx(sphere["mean"], rel=1e-6))
        else:  # nearest neighbour from 0.625 mm voxels: the same sphere up to its surface voxels
            assert abs(got["n_voxels"] - sphere["n_voxels"]) <= 0.3 * sphere["n_voxels"]
            assert got["mean"] == pytest.approx(sphere["mean"], rel=0.1)
        assert logic.targetField(solved["eMagnitude"]).region == f"the target region {node.GetName()}"
    found = logic.strongestPose(sigma, coil, pose, 1e8, None, targetRegionNode=node, anglesDeg=(0.0, 90.0),
                                device="cpu", tol=1e-6)
    assert [row["angle"] for row in found["rows"]] == [0.0, 90.0]
    adapters.updateNodeFromVolume(node, finer.with_array(np.zeros_like(finer.array)))  # the region erased: not kept
    with pytest.raises(ValueError, match="target region finer: the ROI mask holds no non-zero voxel"):
        logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-3, show=False, targetRegionNode=node)


def test_dose_from_a_motor_threshold_set_on_a_solve(mrml_scene, head):
    """The target field read back from an E-field node is the solve's; the dose text follows from two solves."""
    logic, sigma, markup = coil_over_head(mrml_scene, head)
    coil, pose = logic.coilNames()[0], logic.coilToRas(markup, sigma)
    start = logic._markupFrame(markup, sigma)[0]
    normal = logic._markupFrame(markup, sigma)[1][:, 2]
    assert logic.doseSummary("", None).startswith("No motor threshold: put the coil on the motor hotspot")
    plain = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-6, show=False)
    assert logic.targetField(plain["eMagnitude"]) is None  # no target: nothing to dose
    hotspot = logic.computeEField(sigma, coil, pose, 5.5e7, device="cpu", tol=1e-6, show=False,
                                  targetRas=start + 12.0 * normal, targetRadiusMm=5.0)
    motor = logic.targetField(hotspot["eMagnitude"])
    assert motor.e_v_per_m == hotspot["stats"]["target"]["mean"]
    assert (motor.didt, motor.didt_max, motor.head) == (5.5e7, 1e8, sigma.GetID())
    reference = json.dumps(dataclasses.asdict(motor))
    text = logic.doseSummary(reference, hotspot["eMagnitude"])  # the threshold's own pose: 100 % of it
    assert f"Motor threshold: 55.0 % output, dI/dt 55 A/us: mean |E| {motor.e_v_per_m:.1f} V/m within 5 mm" in text
    assert "dI/dt 55 A/us, 55.0 % output, 100 % of the motor threshold." in text
    deeper = logic.computeEField(sigma, coil, pose, 1e8, device="cpu", tol=1e-6, show=False,
                                 targetRas=start + 20.0 * normal, targetRadiusMm=5.0)
    weaker = deeper["stats"]["target"]["mean"]
    output = 100.0 * motor.per_didt * 5.5e7 * 1.1 / weaker  # % of the coil's 100 A/us
    text = logic.doseSummary(reference, deeper["eMagnitude"], 110.0)
    assert f"Dose for 110 % of that field ({1.1 * motor.e_v_per_m:.1f} V/m) at the target" in text
    assert f"{output:.1f} % output, {output / 0.55:.0f} % of the motor threshold." in text
    measured = logic.doseSummary(reference, deeper["eMagnitude"], 110.0, thresholdPercent=44.0)  # 44 %, not 55 %
    assert f"Motor threshold: 44.0 % output, dI/dt 44 A/us: mean |E| {0.8 * motor.e_v_per_m:.1f} V/m" in measured
    assert f"{0.8 * output:.1f} % output, {output / 0.55:.0f} % of the motor threshold." in measured
    other = add_volume(mrml_scene, adapters.volumeFromNode(sigma), "sigma copy")
    elsewhere = logic.computeEField(other, coil, pose, 1e8, device="cpu", tol=1e-3, show=False,
                                    targetRas=start + 12.0 * normal)
    assert "No dose: the motor and target fields come from different conductivity maps" in logic.doseSummary(
        reference, elsewhere["eMagnitude"])
    assert logic.doseSummary("{", deeper["eMagnitude"]).startswith("The stored motor threshold cannot be read")
    record = logic.doseRecord(reference, deeper["eMagnitude"], 110.0)  # for the export sidecar
    assert record["motor_threshold"] == json.loads(reference)
    assert record["target"]["e_v_per_m"] == weaker
    assert record["dose"]["output_percent_of_max"] == pytest.approx(output)
    assert record["percent_of_threshold_field"] == 110.0
    assert record["no_dose_because"] is None
    assert record["motor_threshold_didt_a_per_s"] == 5.5e7
    assert logic.doseRecord(reference, deeper["eMagnitude"], 110.0, 44.0)["motor_threshold_didt_a_per_s"] == 4.4e7
    assert logic.doseRecord(reference, plain["eMagnitude"])["no_dose_because"] == "the E-field shown has no target"
    assert logic.doseRecord("", deeper["eMagnitude"]) == {}


def test_coil_over_a_target_sits_on_the_nearest_scalp_point(mrml_scene, head):
    from CondNetLogic.scalp import nearest_scalp_point

    logic = CondNetSlicerLogic(mrml_scene)
    tissues = head["tissues"]
    sigma, _, _ = labelled_head(mrml_scene, head)
    mask = tissues.with_array(tissues.array > 0)
    centre = tissues.ijk_to_ras_points(np.argwhere(mask.array).mean(axis=0))
    target = centre + OBLIQUE[:3, :3] @ [-12.0, 4.0, 14.0]  # inside the head, up and to the left
    markup = logic.createCoilMarkup()
    scalpPoint, distance = logic.placeCoilOverTarget(markup, sigma, target, handleAngleDeg=30.0)
    assert np.linalg.norm(scalpPoint - nearest_scalp_point(mask, target)) < 2 * 1.25  # snapped within 2 voxels
    assert distance == pytest.approx(np.linalg.norm(scalpPoint - target))
    point, axes = logic._markupFrame(markup, sigma)
    np.testing.assert_allclose(point, scalpPoint, atol=1e-9)
    assert np.dot(axes[:, 2], target - point) / distance > 0.8  # the coil faces the target
    assert abs(logic.coilHandleAngle(markup, sigma) - 30.0) < 1e-6
    with pytest.raises(ValueError, match="choose a target"):
        logic.placeCoilOverTarget(markup, sigma, None)


def test_efield_on_another_conductivity_keeps_the_earlier_results(mrml_scene, head):
    """Re-solving updates the E-field nodes of the same conductivity; another conductivity gets new nodes."""
    logic = CondNetSlicerLogic(mrml_scene)
    tissues = head["tissues"]
    mask = tissues.array > 0
    first = add_volume(mrml_scene, tissues.with_array(np.where(mask, 0.3, 0.0).astype(np.float32)), "first")
    second = add_volume(mrml_scene, tissues.with_array(np.where(mask, 0.6, 0.0).astype(np.float32)), "second")
    markup = logic.createCoilMarkup()
    top = tissues.ijk_to_ras_points(np.argwhere(mask).mean(axis=0)) + np.array([0.0, 0.0, 150.0])
    markup.AddControlPointWorld(*top, "coil")
    logic.snapCoilMarkup(markup, first)
    coil = logic.coilNames()[0]
    pose = logic.coilToRas(markup, first)

    def solve(sigma, previous=None):
        previous = previous or {}
        return logic.computeEField(
            sigma,
            coil,
            pose,
            1e8,
            device="cpu",
            tol=1e-3,
            show=False,
            eVectorNode=previous.get("eVector"),
            eMagnitudeNode=previous.get("eMagnitude"),
            tableNode=previous.get("table"),
        )

    old = solve(first)
    kept = {key: adapters.volumeFromNode(old[key]).array.copy() for key in ("eVector", "eMagnitude")}
    rows = old["table"].GetNumberOfRows()
    new = solve(second, old)  # the panel passes the previous outputs
    for key in ("eVector", "eMagnitude", "table"):
        assert new[key] is not old[key], key
        assert new[key].GetName().startswith("second_"), new[key].GetName()
        assert new[key].GetAttribute("CondNet.Conductivity") == second.GetID()
        assert old[key].GetAttribute("CondNet.Conductivity") == first.GetID()
    for key, array in kept.items():
        np.testing.assert_array_equal(adapters.volumeFromNode(old[key]).array, array)
    assert old["table"].GetNumberOfRows() == rows
    assert json.loads(old["eMagnitude"].GetAttribute("CondNet.Info"))["conductivity"] == "first"
    # The same conductivity again: its own nodes are updated in place, nothing is added.
    count = mrml_scene.GetNumberOfNodes()
    again = solve(first, old)
    assert all(again[key] is old[key] for key in ("eVector", "eMagnitude", "table"))
    assert mrml_scene.GetNumberOfNodes() == count
    # The conductivity put under a transform (a registration) since: the updated nodes follow it.
    registration = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    first.SetAndObserveTransformNodeID(registration.GetID())
    moved = solve(first, old)
    for key in ("eVector", "eMagnitude"):
        assert moved[key] is old[key], key
        assert moved[key].GetParentTransformNode() is registration, key
    first.SetAndObserveTransformNodeID(None)
    solve(first, old)
    assert all(old[key].GetParentTransformNode() is None for key in ("eVector", "eMagnitude"))
    # Dragging the coil (the panel's "Re-solve on coil move"): each solve starts from the previous potential.
    warm = [logic.computeEField(first, coil, pose, 1e8, device="cpu", tol=1e-3, show=False, warmStart=True,
                                eVectorNode=old["eVector"], eMagnitudeNode=old["eMagnitude"],
                                tableNode=old["table"])["info"] for _ in range(2)]
    assert (warm[0]["warm_start"], warm[1]["warm_start"], warm[1]["iterations"]) == (False, True, 0)
    # A CondNet node without the conductivity attribute (unknown origin) is not overwritten either.
    old["eMagnitude"].RemoveAttribute("CondNet.Conductivity")
    assert solve(first, {"eMagnitude": old["eMagnitude"]})["eMagnitude"] is not old["eMagnitude"]

    # Export reads the pose the field was solved with, not the coil's current one.
    np.testing.assert_array_equal(logic.solvedCoilToRas(old["eMagnitude"]), pose)
    logic.setCoilHandleAngle(markup, first, 120.0)
    moved = logic.coilToRas(markup, first)
    assert not logic.samePose(moved, pose)
    assert logic.samePose(logic.solvedCoilToRas(old["eVector"]), pose)
    assert logic.solvedCoilToRas(first) is None
    assert logic.solvedCoilToRas(None) is None


def _out_of_memory(*args, **kwargs):
    """Stands in for a solve that runs out of memory, as numpy reports it."""
    raise MemoryError("Unable to allocate 2.00 GiB for an array with shape (3, 512, 512, 512)")


def test_efield_spread_across_the_slicing_directions(mrml_scene, head, weights, monkeypatch):
    """Each network's own conductivity is kept on request; the spread is the sd of |E| over one solve on each."""
    from CondNetLogic.coil import load_coil
    from CondNetLogic.efield import EFieldSimulation
    from CondNetLogic.metrics import spherical_roi

    logic = CondNetSlicerLogic(mrml_scene)
    t1Node, t2Node = add_volume(mrml_scene, head["t1"], "T1"), add_volume(mrml_scene, head["t2"], "T2")
    options = dict(weightsPath=weights, device="cpu", precision="float32", show=False)
    plain = logic.estimateConductivity(t1Node, t2Node, **options)["conductivity"]["A"]
    assert logic.directionNodes(plain) == {}
    kept = logic.estimateConductivity(t1Node, t2Node, keepDirections=True, **options)
    sigmaNode = kept["conductivity"]["A"]
    members = logic.directionNodes(sigmaNode)
    assert members == kept["directions"]["A"]
    assert sorted(members) == ["axial", "coronal", "sagittal"]
    for direction, node in members.items():
        assert node.GetAttribute(ROLE) == "conductivity-direction"
        assert node.GetAttribute("CondNet.Direction") == direction
        assert node.GetName() == f"T1_conductivity_A_{direction}"
        assert testing.sameGeometry(node, t1Node, atol=1e-9)
    # the conductivity is the mean of the networks' own (paper Eq. 2, in S/m)
    arrays = [adapters.volumeFromNode(node).array for node in members.values()]
    np.testing.assert_allclose(np.mean(arrays, axis=0), adapters.volumeFromNode(sigmaNode).array, atol=1e-5)

    sigma = adapters.volumeFromNode(sigmaNode)
    mask = sigma.array > 0
    markup = logic.createCoilMarkup()
    markup.AddControlPointWorld(*(sigma.ijk_to_ras_points(np.argwhere(mask).mean(axis=0)) + [0.0, 0.0, 150.0]))
    logic.snapCoilMarkup(markup, sigmaNode)
    coil, pose = logic.coilNames()[0], logic.coilToRas(markup, sigmaNode)
    scalpPoint, axes = logic._markupFrame(markup, sigmaNode)
    target = scalpPoint + 8.0 * axes[:, 2]  # 8 mm into the head
    before = node_ids(mrml_scene)
    with pytest.raises(ValueError, match="with 'Keep directions' checked"):
        logic.computeEFieldSpread(plain, coil, pose, 1e8, device="cpu")
    with pytest.raises(Cancelled):
        logic.computeEFieldSpread(sigmaNode, coil, pose, 1e8, device="cpu", cancel=lambda: True)
    assert node_ids(mrml_scene) == before

    import CondNetLogic.efield as efield
    from CondNetLogic.primary_field import default_cache_dir

    calls, spreadOf = [], efield.ensemble_spread
    monkeypatch.setattr(efield, "ensemble_spread", lambda *a, **kw: calls.append(kw) or spreadOf(*a, **kw))
    result = logic.computeEFieldSpread(sigmaNode, coil, pose, 1e8, device="cpu", tol=1e-6, targetRas=target,
                                       targetRadiusMm=6.0, show=False)
    # the members read the coil grid kept on disk, as the main solve does (a 256^3 head: 22 s instead of 84 s)
    assert calls[0]["grid_cache_dir"] == default_cache_dir()
    magnitudes = [EFieldSimulation(adapters.volumeFromNode(node), device="cpu", tol=1e-6)
                  .solve(load_coil(coil), pose, 1e8).e_magnitude.array for node in members.values()]
    spread = adapters.volumeFromNode(result["spread"])
    assert testing.sameGeometry(result["spread"], sigmaNode, atol=1e-9)
    assert result["spread"].GetAttribute(ROLE) == "efield-spread"
    np.testing.assert_allclose(spread.array, np.std(magnitudes, axis=0), atol=1e-4 * np.max(magnitudes))
    assert spread.array[mask].max() > 0
    roi = spherical_roi(sigma, target, 6.0) & mask
    means = [float(m[roi].mean()) for m in magnitudes]
    stats = result["stats"]
    for direction, mean in zip(members, means):
        assert stats[f"{direction} network"]["target_mean"] == pytest.approx(mean, rel=1e-4)
    assert stats["across networks"]["target_mean_sd"] == pytest.approx(np.std(means), rel=1e-3, abs=1e-6)
    assert stats["across networks"]["sd_median"] == pytest.approx(np.median(np.std(magnitudes, axis=0)[mask]),
                                                                  rel=1e-3)
    assert "mean |E| in the target" in result["summary"]
    assert result["warnings"] == []
    assert logic.spreadSummary(result["spread"]) == result["summary"]
    assert logic.spreadSummary(None) == ""
    field = logic.computeEField(sigmaNode, coil, pose, 1e8, device="cpu", tol=1e-3, show=False)["eMagnitude"]
    assert logic.spreadSummary(result["spread"], field) == result["summary"]
    assert logic.spreadSummary(result["spread"], field, sigmaNode) == result["summary"]
    assert logic.spreadSummary(result["spread"], field, plain).endswith("(of another conductivity than the one chosen)")
    logic.setCoilHandleAngle(markup, sigmaNode, 100.0)
    moved = logic.computeEField(sigmaNode, coil, logic.coilToRas(markup, sigmaNode), 1e8, device="cpu", tol=1e-3,
                                show=False, eMagnitudeNode=field)["eMagnitude"]
    assert logic.spreadSummary(result["spread"], moved).endswith("(at an earlier coil pose than the E-field shown)")
    table = result["table"]
    rows = {(table.GetCellText(r, 0), table.GetCellText(r, 1)) for r in range(table.GetNumberOfRows())}
    assert {("axial network", "target_mean"), ("across networks", "target_mean_sd")} <= rows
    # Again: the same nodes are updated in place; a removed member drops out of the ensemble.
    count = mrml_scene.GetNumberOfNodes()
    again = logic.computeEFieldSpread(sigmaNode, coil, pose, 1e8, device="cpu", tol=1e-3, show=False,
                                      spreadNode=result["spread"], tableNode=result["table"])
    assert (again["spread"], again["table"]) == (result["spread"], result["table"])
    assert mrml_scene.GetNumberOfNodes() == count
    assert "target" not in again["summary"]
    mrml_scene.RemoveNode(members["axial"])
    assert sorted(logic.directionNodes(sigmaNode)) == ["coronal", "sagittal"]

    monkeypatch.setattr(EFieldSimulation, "solve", _out_of_memory)
    before = node_ids(mrml_scene)
    with pytest.raises(RuntimeError, match="out of memory .* coarser grid"):
        logic.computeEFieldSpread(sigmaNode, coil, pose, 1e8, device="cpu")
    assert node_ids(mrml_scene) == before


def test_requirements_go_through_slicer_packaging_or_pip_install(monkeypatch, tmp_path):
    """Slicer >= 5.12: slicer.packaging.pip_ensure (a submodule, imported explicitly); older: pip_install."""

    from CondNetSlicerLib import install

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nsafetensors>=0.4\n")
    monkeypatch.setattr(install, "ensureTorch", lambda **kwargs: None)
    calls = []
    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = lambda path: install._readRequirements(path)
    packaging.pip_ensure = lambda requirements, **kwargs: calls.append(
        (requirements, kwargs, Path(kwargs["constraints"]).read_text().split()))
    monkeypatch.delattr(slicer, "packaging", raising=False)  # not bound by "import slicer"
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    install.ensureRequirements(requirements, interactive=False)
    [(listed, options, pinned)] = calls
    assert listed == ["safetensors>=0.4"]
    assert {key: options[key] for key in ("prompt_install", "requester")} == {"prompt_install": False,
                                                                            "requester": "CondNet"}
    # Slicer's own packages are pinned, so that no dependency's range makes pip replace them
    assert f"numpy=={np.__version__}" in pinned
    assert not Path(options["constraints"]).exists()  # the constraints file is removed afterwards

    def decline(requirements, **kwargs):
        raise RuntimeError("the user declined")

    packaging.pip_ensure = decline
    with pytest.raises(install.InstallError, match="declined"):
        install.ensureRequirements(requirements, interactive=False)

    # Older Slicer: neither slicer.packaging nor slicer.pydeps; what is missing goes to slicer.util.pip_install.
    for name in install.SLICER_PACKAGING_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # "import" raises ImportError
    assert install.slicerPackaging() is None
    installed = []
    monkeypatch.setattr(install, "missingRequirements", lambda path: ["safetensors>=0.4"])
    monkeypatch.setattr(slicer.util, "pip_install", lambda arguments: installed.append(
        (arguments, Path(arguments[-1]).read_text().split())), raising=False)
    install.ensureRequirements(requirements, interactive=False)
    [(arguments, pinned)] = installed
    assert arguments[:2] == ["safetensors>=0.4", "-c"]
    assert f"numpy=={np.__version__}" in pinned


def test_the_gpu_memory_is_read_in_a_child_process(monkeypatch):
    """Slicer's own process never creates a CUDA context (it would hold GPU memory until Slicer closes)."""
    import torch

    from CondNetSlicerLib import install

    report = install.deviceReport("cpu")
    assert (report["device"], report["torch"]) == ("cpu", torch.__version__)
    if not torch.cuda.is_available():
        assert install.deviceReport("auto")["device"] == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU is usable by PyTorch"):
            install.deviceReport("cuda")
    # A GPU: its memory comes from a child process, once per maxAgeS.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: pytest.fail("CUDA queried in Slicer's process"))
    children = []

    def child(command, **kwargs):
        children.append(command)
        assert command[1] == "-c"
        assert "mem_get_info" in command[2]
        return types.SimpleNamespace(returncode=0, stderr="", stdout='{"name": "Fake GPU", "free_gib": 3.0, '
                                                                     '"total_gib": 8.0}\n')

    monkeypatch.setattr(install.subprocess, "run", child)
    install._gpuReports.clear()
    report = install.deviceReport("auto")
    assert (report["device"], report["name"], report["free_gib"]) == ("cuda", "Fake GPU", 3.0)
    assert install.deviceReport("auto") == report
    assert len(children) == 1  # reused within maxAgeS
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: types.SimpleNamespace(
        returncode=1, stdout="", stderr="Traceback...\nRuntimeError: CUDA error: out of memory"))
    with pytest.raises(ValueError, match="could not read the GPU's memory: RuntimeError: CUDA error"):
        install.deviceReport("cuda", maxAgeS=0.0)
    install._gpuReports.clear()


def test_missing_requirements_compare_installed_versions(tmp_path):
    from CondNetSlicerLib import install

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pytest>=1.0\npytest<1.0\ncondnet-no-such-package>=1\n")
    assert install.missingRequirements(requirements) == ["pytest<1.0", "condnet-no-such-package>=1"]


def test_old_torch_is_refused_with_a_restart_hint(monkeypatch):
    from CondNetSlicerLib import install

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="1.13.1+cu117"))
    with pytest.raises(install.InstallError, match="needs PyTorch >= 2.1") as raised:
        install.ensureTorch(interactive=False)
    assert raised.value.restartRequired
    recent = types.SimpleNamespace(__version__="2.1.0+cpu")
    monkeypatch.setitem(sys.modules, "torch", recent)
    assert install.ensureTorch(interactive=False) is recent


def test_torch_from_the_pytorch_extension_asks_first(monkeypatch):
    from CondNetSlicerLib import install

    calls = []

    class Logic:
        def installTorch(self, **kwargs):
            calls.append(kwargs)
            return None  # declined

    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" raises ImportError
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    with pytest.raises(install.InstallError, match="not installed"):
        install.ensureTorch(interactive=True)
    assert calls == [{"askConfirmation": True, "torchVersionRequirement": ">=2.1"}]


def test_requirements_are_not_installed_without_asking_and_failures_are_reported(monkeypatch, tmp_path):
    import subprocess

    from CondNetSlicerLib import install

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("safetensors>=0.4\n")
    monkeypatch.setattr(install, "ensureTorch", lambda **kwargs: None)
    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = install._readRequirements

    def pipFails(requirements, **kwargs):
        raise subprocess.CalledProcessError(1, ["pip", "install"])

    packaging.pip_ensure = pipFails
    monkeypatch.setattr(install, "slicerPackaging", lambda: packaging)
    with pytest.raises(install.InstallError, match="failed") as raised:
        install.ensureRequirements(requirements, interactive=False)
    assert raised.value.restartRequired
    # Older Slicer: the user is asked first; declining installs nothing.
    monkeypatch.setattr(install, "slicerPackaging", lambda: None)
    monkeypatch.setattr(install, "missingRequirements", lambda path: ["safetensors>=0.4"])
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: False, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: pytest.fail("installed without asking"),
                        raising=False)
    with pytest.raises(install.InstallError, match="declined"):
        install.ensureRequirements(requirements, interactive=True)


def test_device_report_free_memory_cpu_choice_and_cache_expiry(monkeypatch, capsys):
    import torch

    from CondNetSlicerLib import install

    # The child's query itself: free and total memory in GiB, in that order.
    fakeTorch = types.SimpleNamespace(cuda=types.SimpleNamespace(
        mem_get_info=lambda *a: (3 * 2**30, 8 * 2**30), get_device_name=lambda index: "Fake GPU"))
    monkeypatch.setitem(sys.modules, "torch", fakeTorch)
    exec(install._GPU_QUERY, {})
    assert json.loads(capsys.readouterr().out) == {"name": "Fake GPU", "free_gib": 3.0, "total_gib": 8.0}
    monkeypatch.setitem(sys.modules, "torch", torch)
    # With a GPU present, "cpu" still means the CPU (and no child is started).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    children = []

    def child(command, **kwargs):
        children.append(command)
        return types.SimpleNamespace(returncode=0, stderr="", stdout='{"name": "Fake GPU", "free_gib": 3.0}\n')

    monkeypatch.setattr(install.subprocess, "run", child)
    assert install.deviceReport("cpu")["device"] == "cpu"
    assert children == []
    install._gpuReports.clear()
    try:
        install.deviceReport("auto")
        install.deviceReport("auto", maxAgeS=0.0)  # too old: read again (the free memory changes)
        assert len(children) == 2
    finally:
        install._gpuReports.clear()


def test_every_logic_method_the_widget_calls_exists():
    """The Widget needs the Slicer application to run; at least its calls into the logic must resolve."""
    import re

    text = (Path(__file__).resolve().parents[2] / "CondNetSlicer" / "CondNetSlicer.py").read_text()
    called = set(re.findall(r"self\.logic\.(\w+)", text))
    assert {"coilMarkupForPlacing", "isCoilMarkup", "solvedCoilToRas", "samePose", "getParameterNode"} <= called
    called.discard("getParameterNode")  # ScriptedLoadableModuleLogic's, absent without the application
    called.discard("logCallback")  # an attribute set by the widget
    missing = sorted(name for name in called if not hasattr(CondNetSlicerLogic, name))
    assert not missing, f"CondNetSlicer.py calls logic methods that do not exist: {missing}"


def test_on_grid_undoes_axis_reordering_exactly_and_rejects_resampling(head):
    t1 = head["t1"]
    for perm, flips in (((0, 1, 2), (False, False, True)), ((2, 0, 1), (True, False, True))):
        moved = relabel(t1, perm, flips)
        back = adapters.onGrid(moved, t1.ijk_to_ras, t1.shape)
        np.testing.assert_array_equal(back.array, t1.array)
        np.testing.assert_allclose(back.ijk_to_ras, t1.ijk_to_ras, atol=1e-12)  # the target grid's geometry
    shifted = Volume(t1.array, t1.ijk_to_ras @ np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    with pytest.raises(ValueError, match="resampling"):
        adapters.onGrid(shifted, t1.ijk_to_ras, t1.shape)
    with pytest.raises(ValueError, match="shape"):
        adapters.onGrid(Volume(t1.array[:-1], t1.ijk_to_ras), t1.ijk_to_ras, t1.shape)


def test_slicer_reader_keeps_the_voxel_centres_of_a_left_handed_file(mrml_scene, head, tmp_path):
    """Slicer stores an L-I-A file with its third axis reversed; onGrid maps it back without resampling."""
    from CondNetLogic.io import write_volume

    path = write_volume(head["t1"], tmp_path / "lia.nii.gz")
    node = CondNetSlicerLogic(mrml_scene).readVolumeFile(str(path), "lia")
    loaded = adapters.volumeFromNode(node)
    np.testing.assert_array_equal(
        adapters.onGrid(loaded, head["t1"].ijk_to_ras, head["t1"].shape).array, head["t1"].array
    )


def test_small_logic_errors_are_clear(mrml_scene, tmp_path):
    from CondNetSlicerLib import geometry

    logic = CondNetSlicerLogic(mrml_scene)
    assert logic.tablesFor("A+B") == ["A", "B"]
    table = tmp_path / "mine.json"
    table.write_text('{"name": "mine", "values": {"gm": 0.2, "wm": 0.1}}')
    assert logic.tablesFor("custom", str(table)) == ["mine"]
    with pytest.raises(ValueError, match="table file"):
        logic.tablesFor("custom", "")
    with pytest.raises(ValueError, match="unknown conductivity set"):
        logic.tablesFor("C")
    before = node_ids(mrml_scene)
    with pytest.raises(OSError, match="no such file"):
        logic.readVolumeFile(str(tmp_path / "missing.nrrd"), "x")
    (tmp_path / "broken.nrrd").write_text("NRRD0004\nnot a header\n")
    with pytest.raises(OSError, match="could not read"):
        logic.readVolumeFile(str(tmp_path / "broken.nrrd"), "x")
    assert node_ids(mrml_scene) == before
    with pytest.raises(ValueError, match="landmarks"):
        logic.landmarkPoints(None)
    marks = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "half-placed landmarks")
    for label in ("Nz", "Iz"):
        marks.SetNthControlPointLabel(marks.AddControlPoint(1.0, 2.0, 3.0), label)
    marks.UnsetNthControlPointPosition(1)
    assert list(logic.landmarkPoints(marks)) == ["Nz"]
    mrml_scene.RemoveNode(marks)
    with pytest.raises(ValueError, match="missing Iz, RPA"):
        geometry.findLandmarks({"nasion": [0, 1, 0], "LPA": [-1, 0, 0]})
    empty = add_volume(mrml_scene, Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)), "zero")
    with pytest.raises(ValueError, match="zero everywhere"):
        logic.snapCoilMarkup(logic.createCoilMarkup(), empty)
    with pytest.raises(ValueError, match="estimate"):
        logic.snapCoilMarkup(logic.createCoilMarkup(), None)
    sigma = add_volume(mrml_scene, Volume(np.ones((8, 8, 8), np.float32), np.eye(4)), "one")
    with pytest.raises(ValueError, match="primaryField"):
        logic.computeEField(sigma, logic.coilNames()[0], np.eye(4), 1e8, primaryField="fast")
    frame = geometry.coilFrame([0, -1, 0])  # normal along the default handle: falls back to superior
    assert np.allclose(frame[:, 1], [0, 0, 1])
    assert np.isclose(np.linalg.det(frame), 1.0)


def test_out_of_memory_during_the_solve_tells_the_user_what_to_do(mrml_scene, head, monkeypatch):
    from CondNetLogic import efield

    monkeypatch.setattr(efield.EFieldSimulation, "solve", _out_of_memory)
    tissues = head["tissues"]
    sigma = add_volume(mrml_scene, tissues.with_array((tissues.array > 0).astype(np.float32)), "sigma")
    logic = CondNetSlicerLogic(mrml_scene)
    markup = logic.createCoilMarkup()
    centre = tissues.ijk_to_ras_points(np.array([24.0, 24.0, 24.0]))
    markup.AddControlPointWorld(centre[0], centre[1], centre[2] + 200.0, "coil")
    logic.snapCoilMarkup(markup, sigma)
    before = node_ids(mrml_scene)
    with pytest.raises(RuntimeError, match="out of memory .* coarser grid"):
        logic.computeEField(sigma, logic.coilNames()[0], logic.coilToRas(markup, sigma), 1e8, device="cpu")
    assert logic._simulation is None
    assert node_ids(mrml_scene) == before


def test_coil_model_hidden_until_redrawn_and_first_input_volume(mrml_scene):
    """What the panel uses when the coil's point is removed (hide the model) and when it picks a default T1."""
    from CondNetLogic.coil import coil_pose

    logic = CondNetSlicerLogic(mrml_scene)
    assert logic.firstInputVolume() is None
    labels = add_volume(mrml_scene, Volume(np.zeros((4, 4, 4), np.int16), OBLIQUE), "labels",
                        className="vtkMRMLLabelMapVolumeNode")
    output = add_volume(mrml_scene, Volume(np.ones((4, 4, 4), np.float32), OBLIQUE), "sigma_Emag")
    output.SetAttribute("CondNet.Role", "efield-magnitude")
    assert logic.firstInputVolume() is None  # neither a label map nor a CondNet output is a scan
    scan = add_volume(mrml_scene, Volume(np.ones((4, 4, 4), np.float32), OBLIQUE), "T1")
    assert logic.firstInputVolume() is scan
    assert labels is not scan

    pose = coil_pose(np.array([0.0, 0.0, 90.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0]))
    model, transform = logic.updateCoilModel(logic.coilNames()[0], pose)
    assert model.GetDisplayNode().GetVisibility()
    logic.setCoilModelVisible(model, False)
    assert not model.GetDisplayNode().GetVisibility()
    logic.updateCoilModel(logic.coilNames()[0], pose, None, model, transform)  # placed again: shown again
    assert model.GetDisplayNode().GetVisibility()
    logic.setCoilModelVisible(None, False)  # no model yet: nothing to do


def test_dipole_coil_model_shows_its_dipoles(mrml_scene, tmp_path):
    from CondNetLogic.coil import coil_pose

    path = tmp_path / "pair.ccd"
    path.write_text("# two dipoles;dIdtmax=100\n2\n0.01 0 -0.003 0 0 1e-4\n-0.01 0 -0.003 0 0 -1e-4\n")
    logic = CondNetSlicerLogic(mrml_scene)
    pose = coil_pose(np.array([0.0, 0.0, 90.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0]))
    model, transform = logic.updateCoilModel(str(path), pose)
    polyData = model.GetPolyData()
    assert (polyData.GetNumberOfVerts(), polyData.GetNumberOfLines()) == (2, 0)
    np.testing.assert_allclose(polyData.GetPoint(0), [10.0, 0.0, -3.0])  # coil frame, mm
    assert model.GetAttribute("CondNet.Coil") == "pair"
    wire, _ = logic.updateCoilModel(logic.coilNames()[0], pose, None, model, transform)  # another coil: redrawn
    assert wire.GetPolyData().GetNumberOfVerts() == 0
    assert wire.GetPolyData().GetNumberOfLines() == 2


def test_a_simnibs_tcd_coil_shows_its_wires_and_dipoles(mrml_scene, tmp_path):
    from CondNetLogic.coil import coil_pose

    lines = {"stimulator": 0, "type": 2, "points": [[0, 0, 0], [10, 0, 0]], "values": [[10, 0, 0], [10, 0, 0]]}
    dipole = {"stimulator": 0, "type": 1, "points": [[0, 20, -3]], "values": [[0, 0, 1e-4]]}
    path = tmp_path / "both.tcd"
    path.write_text(json.dumps({"coilElementList": [lines, dipole], "stimulatorList": [{"maxdIdt": 1e8}]}))
    logic = CondNetSlicerLogic(mrml_scene)
    pose = coil_pose(np.array([0.0, 0.0, 90.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0]))
    model, _ = logic.updateCoilModel(str(path), pose)
    polyData = model.GetPolyData()
    assert (polyData.GetNumberOfLines(), polyData.GetNumberOfVerts(), polyData.GetNumberOfPoints()) == (1, 1, 4)
    np.testing.assert_allclose(polyData.GetPoint(0), [-5.0, 0.0, 0.0])  # the first element's start: p - dl / 2
    np.testing.assert_allclose(polyData.GetPoint(3), [0.0, 20.0, -3.0])


def test_a_nifti_coil_shows_its_frame_and_gives_an_e_field(mrml_scene, tmp_path):
    """A sampled A-field coil has no wires: the model shows its x axis and handle; the solve resamples the file."""
    import nibabel

    from CondNetLogic.coil import coil_pose

    path = tmp_path / "sampled.nii.gz"
    affine = np.array([[10.0, 0, 0, -150], [0, 10.0, 0, -150], [0, 0, 10.0, -50], [0, 0, 0, 1]])
    x, y = np.meshgrid(np.arange(31) * 10.0 - 150, np.arange(31) * 10.0 - 150, indexing="ij")
    circulating = np.stack([-y, x, np.zeros_like(x)], axis=-1)[:, :, None, :] * np.ones((1, 1, 31, 1)) * 1e-8
    nibabel.save(nibabel.Nifti1Image(circulating, affine), str(path))  # A about the coil axis: curl along z
    logic = CondNetSlicerLogic(mrml_scene)
    pose = coil_pose(np.array([0.0, 0.0, 90.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0]))
    model, _ = logic.updateCoilModel(str(path), pose)
    polyData = model.GetPolyData()
    assert (polyData.GetNumberOfLines(), polyData.GetNumberOfVerts(), polyData.GetNumberOfPoints()) == (2, 0, 4)
    np.testing.assert_allclose(polyData.GetPoint(3), [0.0, 60.0, 0.0])  # the handle, along coil +y
    assert CondNetSlicerLogic.coilMaxDidt(str(path)) is None  # a NIfTI coil file gives none
    ball = (np.linalg.norm(np.indices((16, 16, 16)) - 7.5, axis=0) <= 6.5) * np.float32(0.33)
    sigmaNode = add_volume(mrml_scene, Volume(ball, np.diag([3.0, 3.0, 3.0, 1.0])), "sigma")
    above = coil_pose(np.array([22.5, 22.5, 45.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0]))
    result = logic.computeEField(sigmaNode, str(path), above, 1e8, device="cpu")
    assert result["info"]["primary_field"] == "sampled"
    assert result["stats"]["head"]["max"] > 1.0  # V/m


def test_coil_max_didt_comes_from_the_coil_file(tmp_path):
    path = tmp_path / "fast.ccd"
    path.write_text("# fast;dIdtmax=150\n1\n0 0 -0.01 0 0 1e-4\n")
    assert CondNetSlicerLogic.coilMaxDidt("figure8_70mm") == 1e8  # A/s
    assert CondNetSlicerLogic.coilMaxDidt(str(path)) == pytest.approx(1.5e8)
    path.write_text("# Magstim_70mm_Fig8.ccd version 1.0 number of elements\n1\n0 0 -0.01 0 0 1e-4\n")
    assert CondNetSlicerLogic.coilMaxDidt(str(path)) is None  # SimNIBS's most used coil file gives none
    with pytest.raises(ValueError, match="no coil file or coil named"):
        CondNetSlicerLogic.coilMaxDidt("not_a_coil")


def sphere_conductivity(n=32, spacing=2.0):
    centre = (n - 1) / 2
    r = np.sqrt(((np.indices((n, n, n)) - centre) ** 2).sum(0))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -centre * spacing
    return Volume((r < 0.4 * n).astype(np.float32) * 0.3, affine)


@pytest.mark.parametrize("underTransform", ["markup", "both"])
def test_coil_pose_does_not_depend_on_the_coil_markups_parent_transform(mrml_scene, underTransform):
    """Snapping and turning a coil markup that sits under a linear transform (e.g. the whole scene put under a
    registration transform in the Data module) gives the same pose, in the conductivity's frame, as without it."""
    logic = CondNetSlicerLogic(mrml_scene)
    sigma = adapters.addVolumeNode(mrml_scene, sphere_conductivity(), "sigma")
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = rotation([1.0, 0.0, 0.5], -25.0)
    matrix[:3, 3] = [-3.0, 2.0, 11.0]
    transform.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(matrix))

    def pose(markupParent, sigmaParent):
        markup = logic.createCoilMarkup()
        markup.SetAndObserveTransformNodeID(markupParent.GetID() if markupParent else None)
        sigma.SetAndObserveTransformNodeID(sigmaParent.GetID() if sigmaParent else None)
        world = np.linalg.inv(adapters.worldToLocalMatrix(sigma)) @ np.array([20.0, 5.0, 15.0, 1.0])
        markup.AddControlPointWorld(*world[:3], "coil")
        logic.snapCoilMarkup(markup, sigma)
        logic.setCoilHandleAngle(markup, sigma, 30.0)
        return logic.coilToRas(markup, sigma), logic.coilHandleAngle(markup, sigma)

    expected, expectedAngle = pose(None, None)
    got, angle = pose(transform, transform if underTransform == "both" else None)
    assert abs(angle - 30.0) < 1e-6
    assert abs(expectedAngle - 30.0) < 1e-6
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_first_input_volume_is_a_plain_scalar_volume(mrml_scene):
    """The T1 picked for the panel is a plain scalar volume, as its selector shows (showChildNodeTypes false): not a
    vector (RGB, E-field), tensor or diffusion volume loaded before it."""
    logic = CondNetSlicerLogic(mrml_scene)
    adapters.addVolumeNode(mrml_scene, Volume(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), "rgb")
    t1 = adapters.addVolumeNode(mrml_scene, Volume(np.random.default_rng(0).random((4, 4, 4)), np.eye(4)), "T1")
    assert logic.firstInputVolume() is t1


def test_export_into_a_path_that_is_a_file_says_so(mrml_scene, tmp_path):
    """An export folder that is a file is refused with a clear error, not the FileExistsError the panel answers with
    'Replace them?' (and then fails the same way)."""
    logic = CondNetSlicerLogic(mrml_scene)
    node = adapters.addVolumeNode(mrml_scene, Volume(np.ones((3, 4, 5), np.float32), np.eye(4)), "v")
    notes = tmp_path / "notes.txt"
    notes.write_text("user notes")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        logic.exportResults(str(notes), {"a": node})
    assert notes.read_text() == "user notes"


def test_a_coil_point_whose_position_was_cleared_gives_no_pose(mrml_scene):
    """Markups module, 'Clear position': the point keeps its old coordinates but has no position; solving there
    would use a pose the user took back."""
    logic = CondNetSlicerLogic(mrml_scene)
    sigma = adapters.addVolumeNode(mrml_scene, sphere_conductivity(), "sigma")
    markup = logic.createCoilMarkup()
    markup.AddControlPointWorld(20.0, 5.0, 15.0, "coil")
    logic.snapCoilMarkup(markup, sigma)
    assert logic.coilToRas(markup, sigma).shape == (4, 4)
    markup.UnsetNthControlPointPosition(0)
    with pytest.raises(ValueError, match="has no position"):
        logic.coilToRas(markup, sigma)

