"""MRML volume nodes <-> :class:`CondNetLogic.volume.Volume`, keeping the IJK-to-RAS geometry exactly.

Axis order
----------
``slicer.util.arrayFromVolume`` returns voxels indexed ``(K, J, I[, C])``; ``Volume.array`` is indexed
``(I, J, K[, C])``.  :func:`swapIK` is the only place where one is turned into the other (the swap is
its own inverse, so the same function serves both directions).

Frames
------
``Volume.ijk_to_ras`` is the node's local IJK-to-RAS matrix (``GetIJKToRASMatrix``), in mm.  A node
under a parent transform keeps that transform: outputs are put under the same parent
(:func:`addVolumeNode`), so they overlay their input wherever the user moves it.
"""

from typing import Optional

import numpy as np
import vtk

import slicer
from CondNetLogic.volume import Volume

__all__ = [
    "addVolumeNode",
    "arrayFromVtkMatrix",
    "ijkToRasFromNode",
    "onGrid",
    "removeNodes",
    "swapIK",
    "updateNodeFromVolume",
    "volumeFromNode",
    "vtkMatrixFromArray",
    "worldToLocalMatrix",
]


def swapIK(array: np.ndarray) -> np.ndarray:
    """Swap the first and third axes: ``(K, J, I[, C])`` <-> ``(I, J, K[, C])`` (a view, not a copy)."""
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a 3D (scalar) or 4D (vector) voxel array, got shape {array.shape}")
    return np.swapaxes(array, 0, 2)


def arrayFromVtkMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """Copy a ``vtkMatrix4x4`` into a float64 (4, 4) array."""
    return np.array(slicer.util.arrayFromVTKMatrix(matrix), dtype=float)


def vtkMatrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A new ``vtkMatrix4x4`` holding a (4, 4) array."""
    array = np.asarray(array, dtype=float)
    if array.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {array.shape}")
    return slicer.util.vtkMatrixFromArray(array)


def ijkToRasFromNode(volumeNode) -> np.ndarray:
    """The node's local IJK-to-RAS matrix (4, 4), mm."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return arrayFromVtkMatrix(matrix)


def _checkVolumeNode(volumeNode, what: str) -> None:
    if volumeNode is None:
        raise ValueError(f"{what}: no volume selected")
    if not volumeNode.IsA("vtkMRMLVolumeNode"):
        raise TypeError(f"{what}: expected a volume node, got {volumeNode.GetClassName()}")
    imageData = volumeNode.GetImageData()
    if imageData is None or min(imageData.GetDimensions()) < 1 or imageData.GetNumberOfPoints() == 0:
        raise ValueError(f"{what} ({volumeNode.GetName()}): the volume has no voxels")


def volumeFromNode(volumeNode, *, what: str = "volume") -> Volume:
    """Copy a scalar or vector volume node into a :class:`Volume` (array ``(I, J, K[, C])``, RAS mm).

    The voxels are copied, so later edits of the node do not change the returned volume.

    Raises
    ------
    ValueError
        If no node is given or it holds no voxels.
    TypeError
        If the node is not a volume node.
    """
    _checkVolumeNode(volumeNode, what)
    kji = slicer.util.arrayFromVolume(volumeNode)
    if kji.ndim == 4 and kji.shape[3] == 1:
        kji = kji[..., 0]
    return Volume(np.ascontiguousarray(swapIK(kji)), ijkToRasFromNode(volumeNode))


def _checkRepresentable(ijkToRas: np.ndarray) -> None:
    """Slicer stores spacing, origin and orthonormal directions: a sheared affine cannot be kept."""
    linear = ijkToRas[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    directions = linear / spacing[np.newaxis, :]
    error = np.abs(directions.T @ directions - np.eye(3)).max()
    if error > 1e-6:
        raise ValueError(
            f"the voxel axes are not orthogonal (max |D^T D - I| = {error:.2g}); a Slicer volume node cannot "
            "hold a sheared grid. Resample the image to an orthogonal grid first."
        )


def updateNodeFromVolume(volumeNode, volume: Volume) -> None:
    """Write a :class:`Volume`'s voxels and IJK-to-RAS matrix into an existing volume node.

    Scalar volumes need a scalar (or label map) node, vector volumes ``(I, J, K, C)`` a vector node.
    """
    _checkRepresentable(volume.ijk_to_ras)
    isVector = volume.array.ndim == 4
    if isVector != bool(volumeNode.IsA("vtkMRMLVectorVolumeNode")):
        kind = "vector" if isVector else "scalar"
        raise TypeError(f"cannot store a {kind} volume in a {volumeNode.GetClassName()}")
    slicer.util.updateVolumeFromArray(volumeNode, np.ascontiguousarray(swapIK(volume.array)))
    volumeNode.SetIJKToRASMatrix(vtkMatrixFromArray(volume.ijk_to_ras))


def addVolumeNode(
    scene,
    volume: Volume,
    name: str,
    *,
    className: Optional[str] = None,
    parentTransformNode=None,
    attributes: Optional[dict] = None,
):
    """Add a new volume node holding ``volume`` to ``scene`` and return it.

    ``className`` defaults to ``vtkMRMLVectorVolumeNode`` for ``(I, J, K, C)`` arrays and
    ``vtkMRMLScalarVolumeNode`` otherwise.  The node gets display nodes (``CreateDefaultDisplayNodes``)
    and, when given, the parent transform of the volume it was computed from.  If filling the node
    fails, the node is removed again, so the scene is left as it was.
    """
    if className is None:
        className = "vtkMRMLVectorVolumeNode" if volume.array.ndim == 4 else "vtkMRMLScalarVolumeNode"
    _checkRepresentable(volume.ijk_to_ras)
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
    try:
        updateNodeFromVolume(node, volume)
        node.CreateDefaultDisplayNodes()
        if parentTransformNode is not None:
            node.SetAndObserveTransformNodeID(parentTransformNode.GetID())
        for key, value in (attributes or {}).items():
            node.SetAttribute(key, str(value))
    except Exception:
        removeNodes(scene, [node])
        raise
    return node


def removeNodes(scene, nodes) -> None:
    """Remove nodes (and their display and storage nodes) from ``scene``; ``None`` entries are skipped."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        helpers = []
        if node.IsA("vtkMRMLDisplayableNode"):
            helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is not None:
                scene.RemoveNode(helper)


def worldToLocalMatrix(node) -> np.ndarray:
    """4x4 matrix from world RAS to the node's local RAS (identity when it has no parent transform).

    Raises
    ------
    ValueError
        If the parent transform is not linear (harden it first).
    """
    transformNode = node.GetParentTransformNode() if node is not None else None
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise ValueError(
            f"{node.GetName()} is under a non-linear transform ({transformNode.GetName()}); "
            "harden the transform (Data module) before running CondNet"
        )
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformFromWorld(matrix)
    return arrayFromVtkMatrix(matrix)


def onGrid(volume: Volume, ijkToRas: np.ndarray, shape, *, atolMm: float = 1e-3) -> Volume:
    """``volume`` re-indexed onto the grid ``(ijkToRas, shape)`` when both sample the same voxel centres.

    Slicer's file reader stores left-handed grids (for example L-I-A NIfTI files) with the third voxel
    axis reversed; the voxels are the same points in space.  This maps such a grid back, exactly
    (a permutation and flips of the voxel axes, no interpolation).

    Raises
    ------
    ValueError
        If the two grids do not hold the same voxel centres.
    """
    ijkToRas = np.asarray(ijkToRas, dtype=float)
    shape = tuple(int(n) for n in shape)
    mapping = np.linalg.solve(ijkToRas, volume.ijk_to_ras)  # volume's indices -> target indices
    linear = np.rint(mapping[:3, :3])
    offset = np.rint(mapping[:3, 3])
    spacing = float(np.min(np.linalg.norm(ijkToRas[:3, :3], axis=0)))
    exact = np.allclose(linear, mapping[:3, :3], atol=atolMm / spacing) and np.allclose(
        offset, mapping[:3, 3], atol=atolMm / spacing
    )
    isPermutation = (
        exact
        and sorted(np.abs(linear).sum(axis=0).tolist()) == [1.0, 1.0, 1.0]
        and np.all(np.abs(linear).sum(axis=1) == 1.0)
    )
    if not isPermutation:
        raise ValueError("the volume is not on the expected voxel grid (it would need resampling)")
    array = np.asarray(volume.array)
    source = [int(np.argmax(np.abs(linear[:, d]))) for d in range(3)]  # target axis of each source axis
    order = [source.index(t) for t in range(3)]
    array = np.transpose(array, order + list(range(3, array.ndim)))
    for t in range(3):
        if linear[t, order[t]] < 0:
            array = np.flip(array, axis=t)
    if array.shape[:3] != shape:
        raise ValueError(f"the volume has shape {array.shape[:3]} on the expected grid, not {shape}")
    return Volume(np.ascontiguousarray(array), ijkToRas)
