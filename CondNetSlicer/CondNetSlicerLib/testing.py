"""Workflow checks shared by the in-Slicer self-test (``CondNetSlicerTest``) and the pytest suite.

:func:`runWorkflow` drives :class:`~.logic.CondNetSlicerLogic` through the whole panel workflow on
the nodes it is given and checks every result; ``check(condition, message)`` reports failures
(``unittest.TestCase.assertTrue`` in Slicer, a raising function under pytest).
"""

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import vtk

import slicer

from . import adapters

__all__ = ["makeTinyWeights", "runWorkflow", "sameGeometry"]


def makeTinyWeights(path: str, *, size: int = 64, tables=("A", "B"), inChannels: int = 2, seed: int = 0) -> str:
    """Write a small, randomly initialised CondNet weights file (for tests of the plumbing only).

    The network is untrained: its conductivity is positive inside the head but not meaningful.
    """
    import torch

    from CondNetLogic.conductivity import get_table
    from CondNetLogic.network import CondNet, CondNetConfig
    from CondNetLogic.weights import save_weights

    config = CondNetConfig(
        in_channels=inChannels,
        out_channels=len(tables),
        depth=2,
        encoder_kernel=3,
        decoder_kernel=3,
        map_kernel=3,
        encoder_features=(2, 4),
        decoder_features=(4,),
    )
    states = {}
    for offset, direction in enumerate(("sagittal", "coronal", "axial")):
        torch.manual_seed(seed + offset)
        states[direction] = CondNet(config).state_dict()
    channels = ["t1", "t2"][:inChannels]
    save_weights(
        path,
        states,
        config=config,
        tables=[get_table(t) for t in tables],
        tau=0.1,
        input_spec={"channels": channels, "size": int(size), "spacing_mm": 1.0, "normalisation": "zscore_unit"},
        training={"note": "untrained test weights made by CondNetSlicerLib.testing.makeTinyWeights"},
        overwrite=True,
    )
    return str(path)


def sameGeometry(node, referenceNode, *, atol: float = 1e-6) -> bool:
    """True when two volume nodes have the same voxel grid (dimensions and IJK-to-RAS within ``atol`` mm)."""
    return tuple(node.GetImageData().GetDimensions()) == tuple(referenceNode.GetImageData().GetDimensions()) and bool(
        np.allclose(adapters.ijkToRasFromNode(node), adapters.ijkToRasFromNode(referenceNode), atol=atol, rtol=0)
    )


def _sliceForegrounds(scene) -> set:
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return {composites.GetItemAsObject(i).GetForegroundVolumeID() for i in range(composites.GetNumberOfItems())}


def runWorkflow(
    logic,
    t1Node,
    t2Node,
    exportDir: str,
    check: Callable[[bool, str], None],
    *,
    weightsPath: str = "",
    tables=("A",),
    labelNode=None,
    labelMapping: str = "samseg",
    coilName: Optional[str] = None,
    device: str = "cpu",
    tol: float = 1e-5,
) -> dict:
    """Conductivity (each network's kept too) -> coil placement -> E-field -> re-solve after a coil move -> dosing ->
    E-field spread across the networks -> export, all checked.

    Returns the nodes made, for further checks by the caller.
    """
    scene = logic.scene
    # 1. Conductivity and uncertainty on the T1's exact grid, shown over the T1.
    outputs = logic.estimateConductivity(t1Node, t2Node, tables=tables, weightsPath=weightsPath, device=device,
                                         keepDirections=True)
    check(sorted(outputs["conductivity"]) == sorted(tables), f"tables made: {sorted(outputs['conductivity'])}")
    sigmaNode = outputs["conductivity"][tables[0]]
    members = [node for table in tables for node in logic.directionNodes(outputs["conductivity"][table]).values()]
    check(len(members) == 3 * len(tables), f"{len(members)} directions' conductivities kept for {len(tables)} tables")
    for node in list(outputs["conductivity"].values()) + list(outputs["uncertainty"].values()) + members:
        check(sameGeometry(node, t1Node, atol=1e-9), f"{node.GetName()} is not on the T1 grid")
        check(node.GetTransformNodeID() == t1Node.GetTransformNodeID(), "output lost the T1's transform")
        values = adapters.volumeFromNode(node).array
        check(bool(np.all(np.isfinite(values))) and float(values.min()) >= 0.0, f"{node.GetName()}: bad values")
    sigma = adapters.volumeFromNode(sigmaNode).array
    check(bool((sigma > 0).any()), "the conductivity is zero everywhere")
    check(_sliceForegrounds(scene) == {sigmaNode.GetID()}, "conductivity is not the slice views' foreground")
    display = sigmaNode.GetDisplayNode()
    check(not display.GetAutoWindowLevel() and display.GetWindowLevelMax() > 0, "conductivity window not set")
    check(display.GetColorNodeID() is not None, "conductivity has no colour map")
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(sigmaNode)
    check(legend is not None and "S/m" in legend.GetTitleText(), "conductivity has no colour legend")

    # 2. Coil markup: put it far above the head, snap it onto the scalp.
    markup = logic.createCoilMarkup()
    mask = adapters.volumeFromNode(sigmaNode).array > 0
    ijkCentre = np.argwhere(mask).mean(axis=0)
    centre = adapters.ijkToRasFromNode(sigmaNode) @ np.append(ijkCentre, 1.0)
    worldToLocal = adapters.worldToLocalMatrix(sigmaNode)
    localToWorld = np.linalg.inv(worldToLocal)
    start = localToWorld @ (centre + np.array([30.0, 0.0, 150.0, 0.0]))
    markup.AddControlPointWorld(start[0], start[1], start[2], "coil")
    scalpPoint, axes = logic.snapCoilMarkup(markup, sigmaNode)
    check(
        abs(np.linalg.det(axes) - 1.0) < 1e-9 and np.allclose(axes.T @ axes, np.eye(3), atol=1e-9),
        "coil axes are not a rotation",
    )
    check(axes[2, 2] < 0, f"coil normal {axes[:, 2]} should point down into the head from above")
    check(scalpPoint[2] > centre[2], "the snapped point is not on top of the head")
    sigmaVolume = adapters.volumeFromNode(sigmaNode)
    ijkIn = np.rint(sigmaVolume.ras_to_ijk_points(scalpPoint + 2.0 * axes[:, 2])).astype(int)
    ijkOut = np.rint(sigmaVolume.ras_to_ijk_points(scalpPoint - 3.0 * axes[:, 2])).astype(int)
    check(bool(mask[tuple(ijkIn)]) and not bool(mask[tuple(ijkOut)]), "the snapped point is not on the scalp")
    logic.setCoilHandleAngle(markup, sigmaNode, 45.0)
    check(abs(logic.coilHandleAngle(markup, sigmaNode) - 45.0) < 1e-6, "handle angle not applied")

    # 3. Coil pose and model.
    coilName = coilName or logic.coilNames()[0]
    pose = logic.coilToRas(markup, sigmaNode, scalpOffsetMm=4.0)
    _, axes = logic._markupFrame(markup, sigmaNode)
    check(np.allclose(pose[:3, :3], axes, atol=1e-9), "coil_to_ras axes differ from the markup's")
    check(np.allclose(pose[:3, 3], scalpPoint - 4.0 * axes[:, 2], atol=1e-6), "coil centre is not 4 mm off the scalp")
    model, transform = logic.updateCoilModel(coilName, pose, sigmaNode)
    toParent = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToParent(toParent)
    check(np.allclose(adapters.arrayFromVtkMatrix(toParent), pose), "coil transform != pose")
    check(model.GetPolyData().GetNumberOfLines() >= 1 and model.GetTransformNodeID() == transform.GetID(), "coil model")

    # 4. E-field, statistics table, overlay.
    didt = 1.0e8
    first = logic.computeEField(
        sigmaNode, coilName, pose, didt, device=device, tol=tol, labelNode=labelNode, labelMapping=labelMapping
    )
    eVector, eMagnitude, table = first["eVector"], first["eMagnitude"], first["table"]
    check(eVector.IsA("vtkMRMLVectorVolumeNode") and eMagnitude.IsA("vtkMRMLScalarVolumeNode"), "E-field node types")
    for node in (eVector, eMagnitude):
        check(sameGeometry(node, t1Node, atol=1e-9), f"{node.GetName()} is not on the T1 grid")
    vector = adapters.volumeFromNode(eVector).array
    magnitude = adapters.volumeFromNode(eMagnitude).array
    check(vector.shape == magnitude.shape + (3,), f"E vector shape {vector.shape}")
    check(np.allclose(np.linalg.norm(vector, axis=-1), magnitude, rtol=1e-5, atol=1e-6), "|E| != norm of E")
    check(float(magnitude.max()) > 0 and not bool(magnitude[~mask].any()), "|E| must be > 0 in the head, 0 outside")
    check(table.GetNumberOfRows() >= 5 and table.GetNumberOfColumns() == 4, "statistics table is incomplete")
    check(_sliceForegrounds(scene) == {eMagnitude.GetID()}, "|E| is not the slice views' foreground")
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(eMagnitude)
    check(legend is not None and "V/m" in legend.GetTitleText(), "|E| has no colour legend")
    simulation = logic._simulation
    nodesBefore = scene.GetNumberOfNodes()

    # 5. Move the coil (turn the handle) and solve again: same nodes updated, solver reused.
    logic.setCoilHandleAngle(markup, sigmaNode, 135.0)
    pose2 = logic.coilToRas(markup, sigmaNode)
    logic.updateCoilModel(coilName, pose2, sigmaNode, model, transform)
    second = logic.computeEField(
        sigmaNode,
        coilName,
        pose2,
        didt,
        device=device,
        tol=tol,
        labelNode=labelNode,
        labelMapping=labelMapping,
        eVectorNode=eVector,
        eMagnitudeNode=eMagnitude,
        tableNode=table,
    )
    check(second["eMagnitude"] is eMagnitude and second["eVector"] is eVector, "re-solve did not reuse the nodes")
    check(scene.GetNumberOfNodes() == nodesBefore, "re-solve added nodes")
    check(logic._simulation is simulation, "re-solve rebuilt the solver")
    vector2 = adapters.volumeFromNode(eVector).array
    check(not np.allclose(vector2, vector), "turning the coil did not change E")

    # 5b. E-field dosing, in nodes of its own: the field 15 mm under the coil kept at half output as the motor
    # threshold's; a solve at full output of the same target needs half output (100 % of the threshold) for it.
    target = scalpPoint + 15.0 * pose2[:3, 2]
    half = logic.computeEField(sigmaNode, coilName, pose2, 0.5 * didt, device=device, tol=tol, targetRas=target,
                               show=False)
    made = [half["eVector"], half["eMagnitude"], half["table"]]
    try:
        field = logic.targetField(half["eMagnitude"])
        check(field is not None and field.didt == 0.5 * didt, "the target field was not kept with the E-field")
        threshold = json.dumps(dataclasses.asdict(field))
        logic.computeEField(sigmaNode, coilName, pose2, didt, device=device, tol=tol, targetRas=target, show=False,
                            eVectorNode=made[0], eMagnitudeNode=made[1], tableNode=made[2])
        text = logic.doseSummary(threshold, made[1])
        check(f"dI/dt {0.5 * didt / 1e6:g} A/us" in text and "100 % of the motor threshold" in text,
              f"the dose of the threshold's own target is {text!r}")
    finally:
        adapters.removeNodes(scene, made)

    # 5c. The spread of |E| across the three networks' own conductivities: 0 outside the head.
    spread = logic.computeEFieldSpread(sigmaNode, coilName, pose2, didt, device=device, tol=tol, targetRas=target,
                                       show=False)
    try:
        check(sameGeometry(spread["spread"], t1Node, atol=1e-9), "the spread of |E| is not on the T1 grid")
        sd = adapters.volumeFromNode(spread["spread"]).array
        check(float(sd.max()) > 0 and not bool(sd[~mask].any()), "the sd of |E| must be > 0 in the head, 0 outside")
        check(spread["summary"].startswith("mean |E| in the target:"), f"spread summary {spread['summary']!r}")
    finally:
        adapters.removeNodes(scene, [spread["spread"], spread["table"]])

    # 6. Export and read back with identical geometry; a second export must refuse to overwrite.
    files = {f"conductivity_{tables[0]}": sigmaNode, "efield_magnitude": eMagnitude, "efield_vector": eVector}
    written = logic.exportResults(exportDir, {**files, "efield_statistics": table}, coilToRas=pose2)
    check(len(written) == len(files) + 3, f"exported {written}")
    exported = (Path(exportDir) / "efield_statistics.csv").read_text(encoding="utf-8").splitlines()
    check(exported[0] == "Region,Statistic,Value,Unit" and len(exported) == table.GetNumberOfRows() + 1,
          f"statistics export: {exported[:2]}")
    for stem, node in files.items():
        className = "vtkMRMLVectorVolumeNode" if node.IsA("vtkMRMLVectorVolumeNode") else "vtkMRMLScalarVolumeNode"
        readBack = logic.readVolumeFile(
            str(Path(exportDir) / f"{stem}.nii.gz"), f"readback_{stem}", className=className
        )
        try:
            # Same voxel centres and values; Slicer's reader may reverse the third axis of a left-handed grid.
            original = adapters.volumeFromNode(node)
            reread = adapters.onGrid(
                adapters.volumeFromNode(readBack), original.ijk_to_ras, original.shape, atolMm=1e-4
            )
            check(np.array_equal(reread.array, original.array), f"{stem}: values changed on export")
        finally:
            adapters.removeNodes(scene, [readBack])
    check(np.allclose(np.loadtxt(Path(exportDir) / "coil_to_ras.txt"), pose2), "coil matrix changed on export")
    try:
        logic.exportResults(exportDir, files, coilToRas=pose2)
        check(False, "a second export overwrote files without being asked")
    except FileExistsError:
        pass
    return {
        "outputs": outputs,
        "markup": markup,
        "model": model,
        "transform": transform,
        "efield": second,
        "pose": pose2,
        "written": written,
    }
