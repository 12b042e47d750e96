"""``CondNetSlicerLogic``: the module's logic, usable without the GUI.

It takes and returns MRML nodes, converts them with :mod:`.adapters` and calls the ``CondNetLogic``
package for all numerics.  It works on the scene it is given (default ``slicer.mrmlScene``), reads
and writes files only through MRML storage nodes, raises exceptions (never shows dialogs), and leaves
the scene as it was when a step fails or is cancelled: results are computed first and nodes are added
only at the end, inside a block that removes them again on error.

Output nodes carry the attribute ``CondNet.Role`` (``conductivity``, ``uncertainty``, ``conductivity-direction``,
``efield-vector``, ``efield-magnitude``, ``efield-statistics``, ``efield-spread``, ``efield-spread-statistics``,
``coil-model``, ``coil-transform``, ``coil-markup``, ``eeg-positions``).  The logic updates an existing node in place
only when it carries that attribute, so a node the user made is never overwritten; E-field outputs are updated in
place only by a solve on the conductivity node they were made from (attribute ``CondNet.Conductivity``), so solving
on another conductivity never replaces earlier results.
"""

import contextlib
import csv
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import vtk

import slicer

from . import adapters, geometry

try:
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
except ImportError:  # slicer-core without the application (pytest): the logic needs none of it
    ScriptedLoadableModuleLogic = object

__all__ = ["CONDUCTIVITY_ATTRIBUTE", "CondNetSlicerLogic", "DIRECTION_REFERENCE", "ROLE", "SUMMARY_ATTRIBUTE",
           "TABLE_CHOICES"]

#: Node attribute naming what CondNet made a node for.
ROLE = "CondNet.Role"
#: Node attribute of E-field outputs: the ID of the conductivity node they were computed from.
CONDUCTIVITY_ATTRIBUTE = "CondNet.Conductivity"
#: Node attribute of an E-field spread: its one-line summary (shown in the panel).
SUMMARY_ATTRIBUTE = "CondNet.Summary"
#: Node reference role from a conductivity node to each slicing direction's own conductivity (kept on request).
DIRECTION_REFERENCE = "CondNet.Direction"
#: Conductivity-set choices of the panel -> table names (``custom`` reads a user table file).
TABLE_CHOICES = {"A": ("A",), "B": ("B",), "A+B": ("A", "B"), "custom": ()}
#: Colour maps by preference; the first present in the scene is used.  Viridis/Inferno ship with the
#: Slicer application (colour files); a bare MRML scene has only the built-in tables after them.
CONDUCTIVITY_COLORS = ("Viridis", "Rainbow")
EFIELD_COLORS = ("Inferno", "Iron")
UNCERTAINTY_COLORS = ("Magma", "Warm1")
#: A loaded coil pose whose point lies further than this (mm) from the head's scalp is reported.
POSE_SCALP_TOLERANCE_MM = 5.0
#: Handle angles tried by :meth:`CondNetSlicerLogic.strongestPose` (degrees; 180 degrees on gives the same
#: |E| for a symmetric coil).
HANDLE_ANGLES_DEG = tuple(float(angle) for angle in range(0, 180, 15))
#: Coil-frame lines (mm) shown for a sampled A-field coil, which has no wires: x from -45 to 45 mm (the span of the
#: shipped figure-8) and the handle from the centre along +y.
SAMPLED_COIL_GLYPH_MM = (np.array([[-45.0, 0.0, 0.0], [45.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0], [0.0, 60.0, 0.0]]))

Progress = Optional[Callable[[float, str], None]]
Cancel = Optional[Callable[[], bool]]


def _role(node) -> str:
    return (node.GetAttribute(ROLE) or "") if node is not None else ""


class CondNetSlicerLogic(ScriptedLoadableModuleLogic):
    """Conductivity estimation, coil placement, E-field simulation and export on MRML nodes.

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Scene to work on; default ``slicer.mrmlScene`` at call time.
    """

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene = scene
        self._simulation = None
        self._simulationKey = None
        self._uniformSimulation = None
        self._uniformKey = None
        self._region = (None, None)  # (key, voxels) of the last target region on a conductivity grid
        self.logCallback: Optional[Callable[[str], None]] = None

    def clearCaches(self) -> None:
        """Free what is kept between solves (operators and work arrays, on the GPU too): the scene is closing."""
        self._simulation = self._simulationKey = None
        self._uniformSimulation = self._uniformKey = None
        self._region = (None, None)

    # ------------------------------------------------------------------------------------ basics
    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    def log(self, text: str) -> None:
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def _checkOutputNode(self, node, role: str):
        """Return ``node`` if CondNet may overwrite it for ``role``; raise if it is a user's node."""
        if node is None:
            return None
        if _role(node) != role:
            raise ValueError(
                f"refusing to overwrite {node.GetName()}: it was not made by CondNet as a {role} node; "
                "set that output to 'None' so that CondNet makes a new node, or choose a node CondNet made"
            )
        return node

    # ------------------------------------------------------------------------- conductivity (CNN)
    @staticmethod
    def tablesFor(choice: str, customTablePath: str = "") -> List[str]:
        """Table names the panel's conductivity-set ``choice`` asks for (``custom``: the file's table).

        Raises
        ------
        ValueError
            For an unknown choice or an unreadable custom table.
        """
        if choice not in TABLE_CHOICES:
            raise ValueError(f"unknown conductivity set {choice!r}; choose one of {', '.join(TABLE_CHOICES)}")
        if choice != "custom":
            return list(TABLE_CHOICES[choice])
        from CondNetLogic.conductivity import load_table

        if not customTablePath:
            raise ValueError("choose a conductivity table file (JSON or CSV) for the custom conductivity set")
        return [load_table(customTablePath).name]

    def estimateConductivity(
        self,
        t1Node,
        t2Node=None,
        *,
        tables: Sequence[str] = ("A",),
        weightsPath: str = "",
        device: str = "auto",
        precision: str = "auto",
        register: bool = False,
        keepDirections: bool = False,
        progress: Progress = None,
        cancel: Cancel = None,
        show: bool = True,
    ) -> Dict[str, Dict[str, object]]:
        """Run CondNet in this process and add conductivity and uncertainty volumes on the T1 grid.

        Parameters
        ----------
        t1Node, t2Node : vtkMRMLScalarVolumeNode
            Input scans (T2 optional for T1-only weights).  Outputs go under the T1's parent transform.
        tables : sequence of str
            Table names to keep (they must be among the weights' tables).
        weightsPath : str
            Weights file; empty = the shipped default weights.
        device : {"auto", "cpu", "cuda"}
        precision : {"auto", "float32"}
            "auto": float16 on a GPU, bfloat16 on CPUs with native support; "float32": float32 everywhere.
        register : bool
            Rigidly register T2 to T1 first.
        keepDirections : bool
            Also add each slicing direction's own conductivity (S/m, one node per table and direction, referenced
            from the conductivity node; see :meth:`directionNodes`), for :meth:`computeEFieldSpread`.
        progress, cancel : callable, optional
            ``progress(fraction, message)``; ``cancel() -> bool``.
        show : bool
            Show the first conductivity as a foreground overlay over the T1.

        Returns
        -------
        dict
            ``{"conductivity": {table: node}, "uncertainty": {table: node}, "directions": {table: {direction:
            node}}, "warnings": [str, ...]}``; the warnings are CondNet's plausibility checks (T1/T2 offset, partial
            T2 cover, T1 and T2 swapped).

        Raises
        ------
        ValueError, WeightsError, Cancelled
            Nothing is added to the scene then.
        """
        from CondNetLogic.inference import predict_conductivity

        t1 = adapters.volumeFromNode(t1Node, what="T1")
        t2 = adapters.volumeFromNode(t2Node, what="T2") if t2Node is not None else None
        t2ToT1 = self._relativeMatrix(t2Node, t1Node) if t2Node is not None else None
        if t2 is not None and not np.allclose(t2ToT1, np.eye(4)):
            t2 = t2.__class__(t2.array, t2ToT1 @ t2.ijk_to_ras)
        weights = self.checkWeightsTables(weightsPath, tables, t2Given=t2Node is not None)
        self.log(f"CondNet: estimating conductivity of {t1Node.GetName()} on device '{device}'")
        prediction = predict_conductivity(
            t1, t2, weights=weights, device=device, precision=precision, register=register, progress=progress,
            cancel=cancel, keep_directions=keepDirections,
        )
        return self._addPrediction(t1Node, prediction.conductivity, prediction.uncertainty, prediction.info, tables,
                                   show=show, directions=prediction.directions)

    @staticmethod
    def checkWeightsTables(weightsPath: str, tables: Sequence[str], *, t2Given: bool = True):
        """Load the weights and check they predict ``tables``; return them.

        Without ``weightsPath`` the shipped weights that predict ``tables`` are taken (T1 + T2 ones when
        ``t2Given``, else T1-only ones first; :func:`CondNetLogic.weights.default_weights_id`).

        Raises
        ------
        WeightsError
            If the weights are missing or corrupt, or do not predict a requested table (checked before any
            work is done).
        """
        from CondNetLogic.weights import load_weights

        return load_weights(weightsPath or None, t2_given=t2Given, tables=list(tables))

    def _relativeMatrix(self, fromNode, toNode) -> np.ndarray:
        """Matrix from ``fromNode``'s local RAS to ``toNode``'s local RAS (through world)."""
        fromToWorld = np.linalg.inv(adapters.worldToLocalMatrix(fromNode))
        return adapters.worldToLocalMatrix(toNode) @ fromToWorld

    def _addPrediction(self, t1Node, conductivity: dict, uncertainty: dict, info: dict, tables, *, show: bool,
                       directions: Optional[dict] = None):
        tables = list(tables)
        missing = [name for name in tables if name not in conductivity]
        if missing:
            raise ValueError(
                f"the weights predict tables {', '.join(sorted(conductivity))}, not {', '.join(missing)}; "
                "choose another conductivity set or other weights"
            )
        t1Geometry = adapters.ijkToRasFromNode(t1Node)
        for name in tables:
            if not np.allclose(conductivity[name].ijk_to_ras, t1Geometry, atol=1e-4):
                raise ValueError(f"conductivity {name} is not on the T1 grid (internal error)")
        parent = t1Node.GetParentTransformNode()
        infoText = json.dumps(info, default=str)
        created: List[object] = []
        result = {"conductivity": {}, "uncertainty": {}, "directions": {}}

        def addScalar(role: str, name: str, volume, colors, title: str, legend: bool, extra: dict, suffix: str = ""):
            node = adapters.addVolumeNode(
                self.scene,
                volume.with_array(np.asarray(volume.array, dtype=np.float32)),
                f"{t1Node.GetName()}_{role.split('-')[0]}_{name}{suffix}",
                parentTransformNode=parent,
                attributes={ROLE: role, "CondNet.Table": name, "CondNet.T1": t1Node.GetID(),
                            "CondNet.Units": "S/m", **extra},
            )
            created.append(node)
            self._styleScalar(node, colors, title, legend=legend)
            return node

        try:
            for name in tables:
                result["conductivity"][name] = addScalar("conductivity", name, conductivity[name], CONDUCTIVITY_COLORS,
                                                         f"Conductivity {name} (S/m)", True, {"CondNet.Info": infoText})
                if name in uncertainty:
                    result["uncertainty"][name] = addScalar("uncertainty", name, uncertainty[name], UNCERTAINTY_COLORS,
                                                            f"Uncertainty {name} (S/m, SD)", False, {})
                for direction, volume in (directions or {}).get(name, {}).items():
                    node = addScalar("conductivity-direction", name, volume, CONDUCTIVITY_COLORS,
                                     f"Conductivity {name}, {direction} network (S/m)", False,
                                     {"CondNet.Direction": direction}, suffix=f"_{direction}")
                    result["conductivity"][name].AddNodeReferenceID(DIRECTION_REFERENCE, node.GetID())
                    result["directions"].setdefault(name, {})[direction] = node
        except Exception:
            adapters.removeNodes(self.scene, created)
            raise
        if show and tables:
            self.showOverlay(t1Node, result["conductivity"][tables[0]])
        result["warnings"] = [str(text) for text in info.get("warnings", [])]
        return result

    # -- background process (GUI path) --------------------------------------------------------
    def predictCommand(
        self,
        t1Path: str,
        t2Path: str,
        outDir: str,
        *,
        weightsPath: str = "",
        device: str = "auto",
        precision: str = "auto",
        register: bool = False,
        table: str = "",
        saveDirections: bool = False,
    ) -> List[str]:
        """The ``condnet predict`` command line run by :meth:`startConductivityProcess` (``table``: the one Table I
        column to predict, which also picks the shipped weights; empty: every table of the weights;
        ``saveDirections``: also write each slicing direction's conductivity)."""
        from .process import pythonCommand

        args = ["predict", "--t1", t1Path, "--out", str(Path(outDir) / "sigma.nii.gz"), "--device", device,
                "--precision", precision]
        if t2Path:
            args += ["--t2", t2Path]
        if weightsPath:
            args += ["--weights", weightsPath]
        if table:
            args += ["--table", table]
        if register:
            args += ["--register"]
        if saveDirections:
            args += ["--save-directions"]
        return pythonCommand(*args)

    def warmupCommand(self) -> List[str]:
        """The ``condnet warmup`` command line: compiles the E-field kernels into numba's on-disk cache, so that
        the first E-field of a new installation does not wait about half a minute for them."""
        from .process import pythonCommand

        return pythonCommand("warmup")

    def startWarmupProcess(self, *, logCallback=None, completedCallback=None):
        """Start :meth:`warmupCommand` in the background; returns the started :class:`~.process.BackgroundProcess`."""
        from .process import BackgroundProcess

        return BackgroundProcess(self.warmupCommand(), logCallback=logCallback,
                                 completedCallback=completedCallback).start()

    def writeVolumeNode(self, node, path: str, *, overwrite: bool = False) -> Path:
        """Write a volume node through a storage node (NRRD or NIfTI by suffix), without changing the scene.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false.
        OSError
            If writing fails.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = node.CreateDefaultStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(1)
        if not storage.WriteData(node):
            raise OSError(f"could not write {node.GetName()} to {path}")
        return path

    def startConductivityProcess(
        self,
        t1Node,
        t2Node=None,
        *,
        weightsPath: str = "",
        device: str = "auto",
        precision: str = "auto",
        register: bool = False,
        logCallback=None,
        progressCallback=None,
        completedCallback=None,
        workDir: Optional[str] = None,
        tables: Optional[Sequence[str]] = None,
        keepDirections: bool = False,
    ):
        """Write the inputs to a temporary folder and start ``condnet predict`` in the background
        (``keepDirections``: as :meth:`estimateConductivity`).

        Returns the started :class:`~.process.BackgroundProcess`; its ``workDir`` and ``outDir``
        attributes say where the files are (delete ``workDir`` when done: it holds copies of the scans).
        Load the results with :meth:`loadConductivityResults` once it ends with return code 0.  The
        files hold local coordinates, so T1 and T2 must be under the same parent transform.
        """
        import shutil

        from CondNetLogic.preprocessing import validate_mri

        from .process import BackgroundProcess

        # Validate before anything is written (NaNs, for instance, would not survive the NIfTI copy).
        validate_mri(adapters.volumeFromNode(t1Node, what="T1"), name=f"T1 ({t1Node.GetName()})")
        if tables is not None:
            self.checkWeightsTables(weightsPath, tables, t2Given=t2Node is not None)
        if t2Node is not None:
            validate_mri(adapters.volumeFromNode(t2Node, what="T2"), name=f"T2 ({t2Node.GetName()})")
            if not np.allclose(self._relativeMatrix(t2Node, t1Node), np.eye(4)):
                raise ValueError("T2 is under a different transform than T1: harden both transforms first")
        ownDir = workDir is None
        workDir = workDir or tempfile.mkdtemp(prefix="CondNet-")
        try:
            t1Path = str(Path(workDir) / "t1.nii.gz")
            self.writeVolumeNode(t1Node, t1Path, overwrite=True)
            t2Path = ""
            if t2Node is not None:
                t2Path = str(Path(workDir) / "t2.nii.gz")
                self.writeVolumeNode(t2Node, t2Path, overwrite=True)
            outDir = str(Path(workDir) / "out")
            command = self.predictCommand(
                t1Path, t2Path, outDir, weightsPath=weightsPath, device=device, precision=precision, register=register,
                table=tables[0] if tables is not None and len(tables) == 1 else "", saveDirections=keepDirections,
            )
            process = BackgroundProcess(
                command, logCallback=logCallback, progressCallback=progressCallback, completedCallback=completedCallback
            )
            process.workDir = workDir
            process.outDir = outDir
            return process.start()
        except Exception:
            if ownDir:
                shutil.rmtree(workDir, ignore_errors=True)
            raise

    def readVolumeFile(self, path: str, name: str, *, className: str = "vtkMRMLScalarVolumeNode"):
        """Read a volume file into a new node through a storage node; on failure nothing is added.

        Raises
        ------
        OSError
            If the file is missing or unreadable.
        """
        if not Path(path).is_file():
            raise OSError(f"{path}: no such file")
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        try:
            if not storage.ReadData(node) or node.GetImageData() is None:
                raise OSError(f"could not read {path}")
        except Exception:
            adapters.removeNodes(self.scene, [node])
            raise
        return node

    def loadConductivityResults(self, outDir: str, t1Node, tables: Sequence[str] = ("A",), *, show: bool = True):
        """Load what ``condnet predict --out <outDir>/sigma.nii.gz`` wrote (listed in its ``sigma.json``).

        The files must lie on the T1 grid (to 1e-3 mm); the nodes get the T1's exact IJK-to-RAS matrix.

        Returns
        -------
        dict
            As :meth:`estimateConductivity`; the warnings come from the sidecar.

        Raises
        ------
        OSError
            If the sidecar or a listed file is missing or unreadable.
        ValueError
            If a result is not on the T1 grid or a requested table is absent.
        """
        sidecarPath = Path(outDir) / "sigma.json"
        if not sidecarPath.is_file():
            raise OSError(f"{sidecarPath}: no such file (did condnet predict fail?)")
        sidecar = json.loads(sidecarPath.read_text(encoding="utf-8"))
        outputs = sidecar.get("outputs", {})
        t1Geometry = adapters.ijkToRasFromNode(t1Node)
        t1Shape = adapters.volumeFromNode(t1Node, what="T1").shape

        def load(path, name: str):
            node = self.readVolumeFile(str(path), f"CondNetTemp_{name}")
            try:
                volume = adapters.volumeFromNode(node)
            finally:
                adapters.removeNodes(self.scene, [node])
            try:
                return adapters.onGrid(volume, t1Geometry, t1Shape)
            except ValueError as err:
                raise ValueError(f"{path} is not on the T1 grid") from err

        loaded = {kind: {name: load(path, f"{kind}_{name}") for name, path in outputs.get(kind, {}).items()
                         if name in tables} for kind in ("conductivity", "uncertainty")}
        directions = {name: {direction: load(path, f"{name}_{direction}") for direction, path in paths.items()}
                      for name, paths in outputs.get("directions", {}).items() if name in tables}
        info = {key: value for key, value in sidecar.items() if key not in ("outputs",)}
        return self._addPrediction(t1Node, loaded["conductivity"], loaded["uncertainty"], info, tables, show=show,
                                   directions=directions)

    # ------------------------------------------------------------------------------------ display
    def _colorNodeID(self, preferred: Sequence[str]) -> Optional[str]:
        for name in preferred:
            node = self.scene.GetFirstNode(name, "vtkMRMLColorNode")
            if node is not None:
                return node.GetID()
        return None

    def _styleScalar(
        self, node, colors: Sequence[str], title: str, *, legend: bool = True, window: Optional[tuple] = None
    ) -> None:
        """Colour map, fixed window on the robust range, transparent air, and a colour legend."""
        display = node.GetDisplayNode()
        if display is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
        colorID = self._colorNodeID(colors)
        if colorID:
            display.SetAndObserveColorNodeID(colorID)
        values = slicer.util.arrayFromVolume(node)
        if window is None:
            positive = values[values > 0]
            high = float(np.percentile(positive, 99.5)) if positive.size else 1.0
            window = (0.0, high if high > 0 else 1.0)
        display.SetAutoWindowLevel(0)
        display.SetWindowLevelMinMax(float(window[0]), float(window[1]))
        # Air (0 S/m, 0 V/m) stays transparent in the foreground overlay.
        display.SetApplyThreshold(1)
        display.SetAutoThreshold(0)
        display.SetLowerThreshold(1e-9)
        display.SetUpperThreshold(float(max(values.max(), window[1])) * 10.0 + 1.0)
        if legend:
            legendNode = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
            if legendNode is not None:
                legendNode.SetTitleText(title)
                legendNode.SetVisibility(1)

    def showOverlay(self, backgroundNode, foregroundNode, *, opacity: float = 0.6) -> None:
        """Show ``foregroundNode`` over ``backgroundNode`` in every slice view of the scene."""
        composites = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for index in range(composites.GetNumberOfItems()):
            composite = composites.GetItemAsObject(index)
            if backgroundNode is not None:
                composite.SetBackgroundVolumeID(backgroundNode.GetID())
            composite.SetForegroundVolumeID(foregroundNode.GetID() if foregroundNode is not None else None)
            composite.SetForegroundOpacity(float(opacity))

    # --------------------------------------------------------------------------------------- coil
    @staticmethod
    def coilNames() -> List[str]:
        """Names of the coils: the shipped ones and those in ``~/.condnet/coils`` (see ``CondNetLogic.coil``)."""
        from CondNetLogic.coil import list_coils

        return list_coils()

    @staticmethod
    def coilMaxDidt(name: str) -> Optional[float]:
        """dI/dt (A/s) of the coil ``name`` (or coil file) at maximum stimulator output, from its coil file; None
        when the file gives none (SimNIBS's ``Magstim_70mm_Fig8.ccd``)."""
        from CondNetLogic.coil import load_coil

        return load_coil(name).didt_max

    def createCoilMarkup(self, name: str = "CondNet coil"):
        """A single-point fiducial node for the coil: position = scalp point, orientation = coil axes."""
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", self.scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE, "coil-markup")
        node.SetMaximumNumberOfControlPoints(1)
        # SetMarkupLabelFormat is the deprecated name (vtkMRMLMarkupsNode.h: "Use SetControlPointLabelFormat").
        node.SetControlPointLabelFormat("coil")
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetHandlesInteractive(True)
            display.SetRotationHandleVisibility(True)
            display.SetTranslationHandleVisibility(True)
            display.SetScaleHandleVisibility(False)
        return node

    @staticmethod
    def hasPlacedPoint(markupNode) -> bool:
        """True when the markups node's first control point exists and has a position (not cleared, not just
        listed in a template waiting to be placed)."""
        return (markupNode is not None and markupNode.GetNumberOfControlPoints() > 0
                and markupNode.GetNthControlPointPositionStatus(0) == markupNode.PositionDefined)

    @staticmethod
    def isCoilMarkup(markupNode) -> bool:
        """True for a markups node CondNet made as the coil markup (see :meth:`createCoilMarkup`)."""
        return markupNode is not None and _role(markupNode) == "coil-markup"

    def coilMarkupForPlacing(self, markupNode=None):
        """The node to place the coil in: ``markupNode`` if it is a CondNet coil markup, else a new one.

        Placing the coil replaces the node's points, so any other point list (landmarks, a user's
        targets) is left alone and a new coil markup is made instead.
        """
        if self.isCoilMarkup(markupNode):
            return markupNode
        if markupNode is not None:
            self.log(f"CondNet: {markupNode.GetName()} is not a CondNet coil markup; making a new one")
        return self.createCoilMarkup()

    def startCoilPlacement(self, markupNode, markupsLogic=None) -> None:
        """Empty the coil markup and put the views in (single-click) place mode for it.

        ``markupsLogic`` is the Markups module's ``vtkSlicerMarkupsLogic`` (default
        ``slicer.modules.markups.logic()``).  Newer Slicer names the method that makes a markups node
        the one to place points in ``SetActiveList`` and keeps ``SetActiveListID`` only as a deprecated
        alias; older releases have only ``SetActiveListID`` (Modules/Loadable/Markups/Logic/
        vtkSlicerMarkupsLogic.h), so whichever exists is used.

        Raises
        ------
        ValueError
            If ``markupNode`` is not a CondNet coil markup (see :meth:`coilMarkupForPlacing`).
        RuntimeError
            If place mode could not be started (no interaction node in the scene).
        """
        self._checkCoilMarkup(markupNode)
        if markupsLogic is None:
            markupsLogic = slicer.modules.markups.logic()
        markupNode.RemoveAllControlPoints()  # place = replace: the node holds one point
        setActiveList = getattr(markupsLogic, "SetActiveList", None) or markupsLogic.SetActiveListID
        setActiveList(markupNode)
        if not markupsLogic.StartPlaceMode(False):
            raise RuntimeError("could not start placing the coil: the scene has no interaction node")

    def _checkCoilMarkup(self, markupNode) -> None:
        """Raise unless ``markupNode`` is a CondNet coil markup (the only markups node CondNet moves)."""
        if markupNode is None:
            raise ValueError("no coil markup: press 'Place coil' to make one")
        if not self.isCoilMarkup(markupNode):
            raise ValueError(
                f"refusing to move the points of {markupNode.GetName()}: it is not a CondNet coil markup; "
                "press 'Place coil' to make one"
            )

    def _headMask(self, conductivityNode):
        if conductivityNode is None:
            raise ValueError(
                "estimate (or select) a conductivity volume first: the coil is snapped to its head surface"
            )
        return geometry.headMask(adapters.volumeFromNode(conductivityNode, what="conductivity"))

    def _markupFrame(self, markupNode, localNode):
        """Point and axes (3, 3) of the coil markup's control point in ``localNode``'s local RAS."""
        if markupNode is None or markupNode.GetNumberOfControlPoints() < 1:
            raise ValueError("place the coil first: the coil markup has no point")
        if markupNode.GetNthControlPointPositionStatus(0) != markupNode.PositionDefined:  # cleared, or not yet placed
            raise ValueError("place the coil first: the coil markup's point has no position")
        point = np.zeros(3)
        markupNode.GetNthControlPointPositionWorld(0, point)
        orientation = vtk.vtkMatrix3x3()
        markupNode.GetNthControlPointOrientationMatrixWorld(0, orientation)
        axes = np.array([[orientation.GetElement(i, j) for j in range(3)] for i in range(3)])
        worldToLocal = adapters.worldToLocalMatrix(localNode)
        return worldToLocal[:3, :3] @ point + worldToLocal[:3, 3], worldToLocal[:3, :3] @ axes

    def _setMarkupFrame(self, markupNode, localNode, point, axes) -> None:
        localToWorld = np.linalg.inv(adapters.worldToLocalMatrix(localNode))
        worldPoint = localToWorld[:3, :3] @ point + localToWorld[:3, 3]
        # The markup's own local frame: Slicer's SetNthControlPointOrientationMatrixWorld ignores its argument when the
        # markups node has a parent transform (vtkMRMLMarkupsNode::TransformOrientationMatrixFromWorldToNode reads
        # the identity output buffer instead of the input, Slicer 5.x), so set the local orientation ourselves.
        markupAxes = adapters.worldToLocalMatrix(markupNode)[:3, :3] @ (localToWorld[:3, :3] @ axes)
        orientation = vtk.vtkMatrix3x3()
        for i in range(3):
            for j in range(3):
                orientation.SetElement(i, j, float(markupAxes[i, j]))
        wasModifying = markupNode.StartModify()
        if markupNode.GetNumberOfControlPoints() < 1:
            markupNode.AddControlPointWorld(vtk.vtkVector3d(*worldPoint), "coil")
        else:
            markupNode.SetNthControlPointPositionWorld(0, *worldPoint)
        markupNode.SetNthControlPointOrientationMatrix(0, orientation)
        markupNode.EndModify(wasModifying)

    def snapCoilMarkup(self, markupNode, conductivityNode, *, keepHandle: bool = True):
        """Move the coil markup onto the scalp and align its axes: z along the inward surface normal,
        y (handle) the previous handle projected onto the scalp's tangent plane.

        Returns ``(scalpPoint, axes)`` in the conductivity node's local RAS (mm).
        """
        self._checkCoilMarkup(markupNode)
        mask = self._headMask(conductivityNode)
        point, axes = self._markupFrame(markupNode, conductivityNode)
        # Cast towards the head centre, not along the old normal: after a drag to the other side of the
        # head the old normal points outwards.
        scalpPoint, normal = geometry.snapToScalp(mask, point)
        keep = keepHandle and self.coilMarkupHasOrientation(markupNode)
        frame = geometry.coilFrame(normal, axes[:, 1] if keep else None)
        self._setMarkupFrame(markupNode, conductivityNode, scalpPoint, frame)
        return scalpPoint, frame

    @staticmethod
    def coilMarkupHasOrientation(markupNode) -> bool:
        """False for a freshly placed point (identity orientation), True once CondNet has aligned it."""
        if markupNode is None or markupNode.GetNumberOfControlPoints() < 1:
            return False
        orientation = vtk.vtkMatrix3x3()
        markupNode.GetNthControlPointOrientationMatrix(0, orientation)
        return not np.allclose([[orientation.GetElement(i, j) for j in range(3)] for i in range(3)], np.eye(3))

    def setCoilHandleAngle(self, markupNode, conductivityNode, angleDeg: float) -> np.ndarray:
        """Turn the handle to ``angleDeg``: 0 = posterior (projected on the scalp), positive towards
        lateral, so 45 = posterior-lateral at 45 degrees to the midline on either hemisphere (on the
        midline positive turns towards the subject's left; see :func:`.geometry.handleDirection`).
        Directions are those of the conductivity node's RAS axes.  Returns the axes."""
        self._checkCoilMarkup(markupNode)
        point, axes = self._markupFrame(markupNode, conductivityNode)
        frame = geometry.coilFrame(axes[:, 2], geometry.handleDirection(axes[:, 2], angleDeg))
        self._setMarkupFrame(markupNode, conductivityNode, point, frame)
        return frame

    def coilHandleAngle(self, markupNode, conductivityNode) -> float:
        """The handle angle (degrees, see :meth:`setCoilHandleAngle`) of the coil markup."""
        _, axes = self._markupFrame(markupNode, conductivityNode)
        return geometry.handleAngle(axes[:, 2], axes[:, 1])

    def coilToRas(self, markupNode, conductivityNode, *, scalpOffsetMm: float = 4.0) -> np.ndarray:
        """``coil_to_ras`` (4x4, mm, in the conductivity node's local RAS) from the coil markup:
        the coil centre ``scalpOffsetMm`` outside the markup point along -z."""
        from CondNetLogic.coil import coil_pose

        point, axes = self._markupFrame(markupNode, conductivityNode)
        return coil_pose(point, axes[:, 2], axes[:, 1], scalp_offset_mm=scalpOffsetMm)

    @staticmethod
    def readCoilPose(path: str) -> np.ndarray:
        """A saved coil pose (4x4, coil frame -> RAS, mm): an exported ``coil_to_ras.txt``, an ``efield.json`` of
        ``condnet efield``, or SimNIBS's ``matsimnibs`` (see ``CondNetLogic.coil.read_coil_to_ras``)."""
        from CondNetLogic.coil import read_coil_to_ras

        return read_coil_to_ras(path)

    def placeCoilAtPose(self, markupNode, conductivityNode, coilToRas, *, scalpOffsetMm: float = 4.0) -> float:
        """Put the coil markup where ``coilToRas`` (4x4, mm, the conductivity node's local RAS, as exported) puts
        the coil: its point ``scalpOffsetMm`` from the coil centre along +z, its axes the pose's, so that
        :meth:`coilToRas` gives the pose back.  The point is not snapped; a point more than
        ``POSE_SCALP_TOLERANCE_MM`` from this head's scalp is logged (a pose of another head or frame?).

        Returns the distance (mm) from the point to the scalp.
        """
        from CondNetLogic.coil import check_coil_to_ras

        self._checkCoilMarkup(markupNode)
        mask = self._headMask(conductivityNode)
        pose = check_coil_to_ras(coilToRas)
        point = pose[:3, 3] + scalpOffsetMm * pose[:3, 2]
        scalpPoint, _ = geometry.snapToScalp(mask, point)  # raises, before the markup moves, if no head is in line
        distance = float(np.linalg.norm(scalpPoint - point))
        self._setMarkupFrame(markupNode, conductivityNode, point, pose[:3, :3])
        if distance > POSE_SCALP_TOLERANCE_MM:
            self.log(f"The coil pose puts the coil point {distance:.0f} mm from this head's scalp (scalp offset "
                     f"{scalpOffsetMm:g} mm): is it a pose of another head, or in another frame? Snap the coil to "
                     "put it on the scalp.")
        return distance

    def placeCoilOverTarget(self, markupNode, conductivityNode, targetRas, *, handleAngleDeg: float = 45.0):
        """Put the coil markup on the scalp point nearest to ``targetRas`` (the conductivity node's local RAS, mm;
        see :meth:`targetPoint`), snapped to the scalp, with the handle at ``handleAngleDeg`` (see
        :meth:`setCoilHandleAngle`).  Returns ``(scalpPoint, distanceMm)``: the point and its distance to the
        target."""
        from CondNetLogic.scalp import nearest_scalp_point

        self._checkCoilMarkup(markupNode)
        if targetRas is None:
            raise ValueError("choose a target point list with a point first")
        mask = self._headMask(conductivityNode)
        scalpPoint, normal = geometry.snapToScalp(mask, nearest_scalp_point(mask, targetRas))
        self._setMarkupFrame(markupNode, conductivityNode, scalpPoint, geometry.coilFrame(normal))
        self.setCoilHandleAngle(markupNode, conductivityNode, handleAngleDeg)
        return scalpPoint, float(np.linalg.norm(scalpPoint - np.asarray(targetRas, dtype=float)))

    @staticmethod
    def targetPoint(targetNode, conductivityNode) -> Optional[np.ndarray]:
        """The first control point of a target markup in the conductivity node's local RAS (mm); None without one
        (or while it is not placed)."""
        if not CondNetSlicerLogic.hasPlacedPoint(targetNode):
            return None
        point = np.zeros(3)
        targetNode.GetNthControlPointPositionWorld(0, point)
        worldToLocal = adapters.worldToLocalMatrix(conductivityNode)
        return worldToLocal[:3, :3] @ point + worldToLocal[:3, 3]

    def landmarkPoints(self, landmarksNode) -> Dict[str, np.ndarray]:
        """``{label: world RAS}`` of a markups node's placed control points."""
        if landmarksNode is None:
            raise ValueError("select a landmarks markup (control points labelled Nz, Iz, LPA, RPA) for EEG presets")
        points = {}
        for index in range(landmarksNode.GetNumberOfControlPoints()):
            if landmarksNode.GetNthControlPointPositionStatus(index) != landmarksNode.PositionDefined:
                continue  # listed but not placed (yet): its position is meaningless
            position = np.zeros(3)
            landmarksNode.GetNthControlPointPositionWorld(index, position)
            points[landmarksNode.GetNthControlPointLabel(index)] = position
        return points

    def _localLandmarks(self, landmarksNode, conductivityNode) -> Dict[str, np.ndarray]:
        """``{label: point}`` of the landmarks markup in the conductivity node's local RAS (mm)."""
        worldToLocal = adapters.worldToLocalMatrix(conductivityNode)
        return {label: worldToLocal[:3, :3] @ p + worldToLocal[:3, 3]
                for label, p in self.landmarkPoints(landmarksNode).items()}

    def placeCoilAtPreset(
        self, markupNode, landmarksNode, conductivityNode, position: str = "C3", *, handleAngleDeg: float = 45.0
    ):
        """Put the coil markup on the 10-10 position ``position`` (e.g. ``C3``), snapped to the scalp, with
        the handle at ``handleAngleDeg`` (default 45: posterior-lateral, see :meth:`setCoilHandleAngle`)."""
        self._checkCoilMarkup(markupNode)
        mask = self._headMask(conductivityNode)
        landmarks = self._localLandmarks(landmarksNode, conductivityNode)
        target = geometry.eegPositions(mask, landmarks, [position])[position]
        scalpPoint, normal = geometry.snapToScalp(mask, target)
        self._setMarkupFrame(markupNode, conductivityNode, scalpPoint, geometry.coilFrame(normal))
        self.setCoilHandleAngle(markupNode, conductivityNode, handleAngleDeg)
        return scalpPoint

    def showEegPositions(self, landmarksNode, conductivityNode, markupNode=None):
        """A locked point list of every 10-10 position (:data:`CondNetLogic.scalp.EEG_1010`, labelled) on the scalp of
        the conductivity's head, found from the landmarks as :meth:`placeCoilAtPreset` finds one.

        ``markupNode``, when it is one this method made (attribute ``CondNet.Role`` = ``eeg-positions``), is filled
        again in place; any other node is left alone and a new one is made.  Returns the node.
        """
        positions = geometry.eegPositions(self._headMask(conductivityNode),
                                          self._localLandmarks(landmarksNode, conductivityNode))
        localToWorld = np.linalg.inv(adapters.worldToLocalMatrix(conductivityNode))
        node = markupNode if _role(markupNode) == "eeg-positions" else None
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                self.scene.GenerateUniqueName("CondNet 10-10 positions"))
            node.SetAttribute(ROLE, "eeg-positions")
            node.CreateDefaultDisplayNodes()
        wasModifying = node.StartModify()
        try:
            node.RemoveAllControlPoints()
            for name, point in positions.items():
                node.AddControlPointWorld(*(localToWorld[:3, :3] @ point + localToWorld[:3, 3]), name)
            node.SetLocked(True)
        finally:
            node.EndModify(wasModifying)
        return node

    def updateCoilModel(
        self, coilName: str, coilToRas: np.ndarray, conductivityNode=None, modelNode=None, transformNode=None
    ):
        """Show the coil's wire as a polyline model (a dipole coil: its dipoles as points; a sampled A-field coil,
        which has neither: its frame, a line along x and the handle along +y) placed by ``coil_to_ras``.

        The model stays in the coil frame; a linear transform node (``coil-transform``) holds
        ``coil_to_ras`` and sits under the conductivity's parent transform, so moving the coil only
        changes one matrix.  Returns ``(modelNode, transformNode)``.
        """
        from CondNetLogic.coil import check_coil_to_ras, load_coil

        pose = check_coil_to_ras(coilToRas)
        coil = load_coil(coilName)
        modelNode = self._checkOutputNode(modelNode, "coil-model")
        transformNode = self._checkOutputNode(transformNode, "coil-transform")
        created = []
        try:
            if transformNode is None:
                transformNode = self.scene.AddNewNodeByClass(
                    "vtkMRMLLinearTransformNode", self.scene.GenerateUniqueName("CondNet coil_to_ras")
                )
                transformNode.SetAttribute(ROLE, "coil-transform")
                created.append(transformNode)
            parent = conductivityNode.GetParentTransformNode() if conductivityNode is not None else None
            transformNode.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)
            transformNode.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(pose))
            transformNode.SetAttribute("CondNet.Coil", coil.name)
            if modelNode is None or modelNode.GetAttribute("CondNet.Coil") != coil.name:
                points = vtk.vtkPoints()
                lines = vtk.vtkCellArray()
                for line in coil.polylines_mm if coil.sampled is None else SAMPLED_COIL_GLYPH_MM:
                    ids = vtk.vtkIdList()
                    for vertex in np.asarray(line, dtype=float):
                        ids.InsertNextId(points.InsertNextPoint(*vertex))
                    lines.InsertNextCell(ids)
                vertices = vtk.vtkCellArray()
                for position in np.asarray(coil.dipole_positions_mm, dtype=float):
                    vertices.InsertNextCell(1)
                    vertices.InsertCellPoint(points.InsertNextPoint(*position))
                polyData = vtk.vtkPolyData()
                polyData.SetPoints(points)
                polyData.SetLines(lines)
                polyData.SetVerts(vertices)
                if modelNode is None:
                    modelNode = self.scene.AddNewNodeByClass(
                        "vtkMRMLModelNode", self.scene.GenerateUniqueName("CondNet coil")
                    )
                    modelNode.SetAttribute(ROLE, "coil-model")
                    created.append(modelNode)
                modelNode.SetAndObservePolyData(polyData)
                modelNode.SetAttribute("CondNet.Coil", coil.name)
                modelNode.CreateDefaultDisplayNodes()
                display = modelNode.GetDisplayNode()
                display.SetColor(0.95, 0.55, 0.1)
                display.SetLineWidth(3)
                display.SetPointSize(4)
                display.SetVisibility2D(True)
            modelNode.SetAndObserveTransformNodeID(transformNode.GetID())
            self.setCoilModelVisible(modelNode, True)  # shown again after a new placement hid it
        except Exception:
            adapters.removeNodes(self.scene, created)
            raise
        return modelNode, transformNode

    @staticmethod
    def setCoilModelVisible(modelNode, visible: bool) -> None:
        """Show or hide a coil model (hidden while its coil markup has no point: the pose is gone)."""
        if modelNode is not None and modelNode.GetDisplayNode() is not None:
            modelNode.GetDisplayNode().SetVisibility(bool(visible))

    def firstInputVolume(self):
        """The first scalar volume of the scene that can be a T1: not a label map, not a CondNet output."""
        volumes = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        for index in range(volumes.GetNumberOfItems()):
            node = volumes.GetItemAsObject(index)
            # exactly a scalar volume, as the T1 selector lists (showChildNodeTypes false): no label map, vector
            # (RGB), tensor or diffusion volume, all subclasses of vtkMRMLScalarVolumeNode
            if node.GetClassName() == "vtkMRMLScalarVolumeNode" and not _role(node):
                return node
        return None

    # ------------------------------------------------------------------------------------ E-field
    def _simulationFor(self, conductivityNode, *, device: str, tol: float, progress: Progress = None,
                       cancel: Cancel = None):
        """The cached :class:`EFieldSimulation` of this conductivity (rebuilt when it changed)."""
        from CondNetLogic.efield import EFieldSimulation
        from CondNetLogic.primary_field import default_cache_dir

        image = conductivityNode.GetImageData()
        # Rebuild only when the voxels or the grid change (renaming or restyling the node does not count).
        key = (
            conductivityNode.GetID(),
            image.GetMTime(),
            tuple(adapters.ijkToRasFromNode(conductivityNode).ravel()),
            device,
            float(tol),
        )
        if self._simulation is None or self._simulationKey != key:
            self._simulation = None
            volume = adapters.volumeFromNode(conductivityNode, what="conductivity")
            self.log(f"CondNet: preparing the E-field solver for {conductivityNode.GetName()}")
            # Coil grids are kept on disk, so only the first coil move of the first session builds one.
            self._simulation = EFieldSimulation(
                volume, device=device, tol=tol, grid_cache_dir=default_cache_dir(), progress=progress, cancel=cancel
            )
            self._simulationKey = key
        return self._simulation

    @staticmethod
    def _solveInputs(conductivityNode, coilName: str, coilToRas: np.ndarray, didt: float):
        """``(pose, coil, conductivity Volume)`` of a solve, after checking dI/dt (A/s) and the pose (RAS mm)."""
        from CondNetLogic.coil import check_coil_to_ras, load_coil

        if not np.isfinite(didt) or didt == 0:
            raise ValueError(f"dI/dt must be a non-zero number of A/s, got {didt}")
        return check_coil_to_ras(coilToRas), load_coil(coilName), adapters.volumeFromNode(conductivityNode,
                                                                                           what="conductivity")

    def computeEField(
        self,
        conductivityNode,
        coilName: str,
        coilToRas: np.ndarray,
        didt: float,
        *,
        device: str = "auto",
        tol: float = 1e-6,
        labelNode=None,
        labelMapping: str = "samseg",
        uniformTable: str = "",
        primaryField: str = "auto",
        warmStart: bool = False,
        eVectorNode=None,
        eMagnitudeNode=None,
        tableNode=None,
        targetRas=None,
        targetRadiusMm: float = 5.0,
        targetRegionNode=None,
        progress: Progress = None,
        cancel: Cancel = None,
        show: bool = True,
    ) -> Dict[str, object]:
        """Solve the E-field for one coil pose and write |E|, E and a statistics table into nodes.

        The solver (operator, multigrid hierarchy) is kept between calls with the same conductivity,
        so moving the coil and solving again only redoes the right-hand side and the solve.

        Parameters
        ----------
        conductivityNode : vtkMRMLScalarVolumeNode
            Conductivity in S/m.
        coilName : str
            Shipped coil name or coil file.
        coilToRas : ndarray (4, 4)
            Coil pose in the conductivity node's local RAS, mm (see :meth:`coilToRas`).
        didt : float
            Coil current slope, A/s.
        labelNode : vtkMRMLLabelMapVolumeNode, optional
            Label map on the conductivity grid; adds grey-matter statistics and the generalized error
            against the uniform-conductivity model of that label map (paper Eq. 6).
        labelMapping : str
            ``samseg``, ``synthseg`` (shipped label -> tissue tables) or a CSV path.
        uniformTable : str
            Table of the uniform model: ``A``, ``B`` or a file; default the conductivity's table.
        primaryField : {"auto", "direct", "grid"}
            How the coil's primary field is evaluated (:data:`CondNetLogic.efield.PRIMARY_FIELD_MODES`).
            ``grid`` costs one slow precomputation per coil, then makes every coil move fast: use it
            when the coil will be moved and solved many times.
        warmStart : bool
            Start the solve from the previous potential of this conductivity (fewer iterations after a small
            coil move; the result then depends on the previous pose within the solver tolerance).
        eVectorNode, eMagnitudeNode, tableNode : optional
            CondNet-made nodes to update in place (for re-solving after a coil move).  A node made from
            another conductivity node (attribute ``CondNet.Conductivity``) is left as it is, and a new
            node named after this conductivity is made instead.
        targetRas : array (3,), optional
            A stimulation target in the conductivity node's local RAS (mm; see :meth:`targetPoint`): the table
            gets the statistics of |E| in the conducting voxels within ``targetRadiusMm`` of it (region
            ``target``); a sphere without a conducting voxel gives a warning instead.
        targetRegionNode : vtkMRMLLabelMapVolumeNode, optional
            Instead of the sphere: the target is the conducting voxels under the non-zero voxels of this label map
            (an fMRI cluster, an atlas region; any grid and transform, taken onto the conductivity's voxels by
            nearest neighbour).

        Returns
        -------
        dict
            ``{"eVector": node, "eMagnitude": node, "table": node, "stats": dict, "info": dict,
            "warnings": [str, ...]}``; a warning says that the solve stopped short of its tolerance.
        """
        eVectorNode = self._reusableEFieldNode(eVectorNode, "efield-vector", conductivityNode)
        eMagnitudeNode = self._reusableEFieldNode(eMagnitudeNode, "efield-magnitude", conductivityNode)
        tableNode = self._reusableEFieldNode(tableNode, "efield-statistics", conductivityNode)
        pose, coil, conductivity = self._solveInputs(conductivityNode, coilName, coilToRas, didt)
        uniform = None
        if labelNode is not None:
            uniform, tissues = self._uniformModel(conductivityNode, conductivity, labelNode, labelMapping, uniformTable)
        from CondNetLogic.efield import PRIMARY_FIELD_MODES

        if primaryField not in PRIMARY_FIELD_MODES:
            raise ValueError(f"primaryField must be one of {PRIMARY_FIELD_MODES}, got {primaryField!r}")
        target, where, about = self._target(conductivityNode, conductivity, targetRas, targetRadiusMm,
                                            targetRegionNode)  # a bad region fails before the solve

        def freeSolver():
            self._simulation = None  # free the operator and its work arrays

        with _outOfMemoryExplained(device, freeSolver):
            simulation = self._simulationFor(conductivityNode, device=device, tol=tol, progress=progress,
                                             cancel=cancel)
            # per-solve choices; the built solver does not depend on them
            simulation.primary_field, simulation.warm_start = primaryField, bool(warmStart)
            share = ("the coil file gives no maximum" if coil.didt_max is None else
                     f"{100.0 * didt / coil.didt_max:.0f} % of the coil file's maximum, {coil.didt_max:.4g} A/s")
            self.log(f"CondNet: solving the E-field for {coil.name}, dI/dt = {didt:.4g} A/s ({share})")
            result = simulation.solve(coil, pose, float(didt), progress=progress, cancel=cancel)
        for note in result.info.get("fallbacks", []):
            self.log(f"CondNet: {note}")
        warnings = []
        if not result.info.get("converged", True):
            warnings.append(
                f"The E-field solve stopped after {result.info.get('iterations')} iterations at a relative residual "
                f"of {result.info.get('residual', float('nan')):.2g}, above its tolerance {tol:g}: the field may be "
                "inaccurate. Check the conductivity for isolated or extreme values."
            )
            self.log(f"CondNet: {warnings[-1]}")
        stats = self._statistics(
            result.e_magnitude, conductivity, labelNode, tissues if labelNode is not None else None
        )
        if target is not None:
            from CondNetLogic.metrics import roi_stats

            if target.any():
                stats["target"] = roi_stats(result.e_magnitude, target)
                result.info["target"] = {**about, "mean_v_per_m": stats["target"]["mean"]}
                self.log(f"CondNet: |E| within {where}: mean {stats['target']['mean']:.1f} V/m, "
                         f"max {stats['target']['max']:.1f} V/m")
            else:
                warnings.append(f"No conducting voxel lies within {where}: the target has no statistics. Put the "
                                "target on the cortex (or the head)" + ("." if "region" in about else
                                                                        ", or widen its radius."))
                self.log(f"CondNet: {warnings[-1]}")
        if uniform is not None:
            uniformKey = (
                labelNode.GetID(),
                labelNode.GetImageData().GetMTime(),
                labelMapping,
                uniformTable,
                conductivityNode.GetAttribute("CondNet.Table"),
                device,
                float(tol),
            )
            for region, entries in self._generalizedError(
                result, uniform, uniformKey, pose, coil, didt, device, tol, tissues, progress, cancel
            ).items():
                stats.setdefault(region, {}).update(entries)
        written = self._writeEField(
            conductivityNode, result, stats, coil, pose, didt, eVectorNode, eMagnitudeNode, tableNode, show=show
        )
        written["warnings"] = warnings
        return written

    def directionNodes(self, conductivityNode) -> Dict[str, object]:
        """Each slicing direction's own conductivity of ``conductivityNode``, ``{direction: node}`` (kept by
        :meth:`estimateConductivity` or :meth:`loadConductivityResults` with ``keepDirections``); empty for a
        conductivity without them."""
        if conductivityNode is None:
            return {}
        nodes = {}
        for index in range(conductivityNode.GetNumberOfNodeReferences(DIRECTION_REFERENCE)):
            node = conductivityNode.GetNthNodeReference(DIRECTION_REFERENCE, index)
            if node is not None:  # a removed node leaves no reference behind, but be safe
                nodes[node.GetAttribute("CondNet.Direction") or node.GetName()] = node
        return nodes

    def computeEFieldSpread(
        self,
        conductivityNode,
        coilName: str,
        coilToRas: np.ndarray,
        didt: float,
        *,
        device: str = "auto",
        tol: float = 1e-6,
        targetRas=None,
        targetRadiusMm: float = 5.0,
        targetRegionNode=None,
        spreadNode=None,
        tableNode=None,
        progress: Progress = None,
        cancel: Cancel = None,
        show: bool = True,
    ) -> Dict[str, object]:
        """How ``|E|`` of one coil pose varies with the network that estimated the conductivity.

        Solves the E-field once on each slicing direction's own conductivity (:meth:`directionNodes`, whose mean is
        ``conductivityNode`` and whose spread its uncertainty) and writes the voxel-wise standard deviation of
        ``|E|`` across them (V/m, population sd) into a volume, and each network's head 99th percentile and target
        mean ``|E|`` into a table.  Arguments as :meth:`computeEField`; ``spreadNode`` and ``tableNode`` are
        CondNet-made nodes to update in place.  Costs one solve per direction, each with its own solver.

        Returns
        -------
        dict
            ``{"spread": node, "table": node, "stats": dict, "summary": str, "warnings": [str, ...]}``.

        Raises
        ------
        ValueError
            A conductivity without two or more directions' conductivities, one of them moved under another
            transform or resampled, or the errors of :meth:`computeEField`.
        Cancelled
            Nothing is changed then.
        """
        from CondNetLogic.efield import ensemble_spread, ensemble_statistics
        from CondNetLogic.primary_field import default_cache_dir

        spreadNode = self._reusableEFieldNode(spreadNode, "efield-spread", conductivityNode)
        tableNode = self._reusableEFieldNode(tableNode, "efield-spread-statistics", conductivityNode)
        members = self.directionNodes(conductivityNode)
        if len(members) < 2:
            raise ValueError(
                f"{conductivityNode.GetName()} has no conductivities of the separate slicing directions: estimate the "
                "conductivity again with 'Keep directions' checked"
            )
        pose, coil, conductivity = self._solveInputs(conductivityNode, coilName, coilToRas, didt)
        volumes = []
        for direction, node in members.items():
            if not np.allclose(self._relativeMatrix(node, conductivityNode), np.eye(4)):
                raise ValueError(f"{node.GetName()} is under another transform than {conductivityNode.GetName()}: "
                                 "put it back under the same one")
            volumes.append(adapters.volumeFromNode(node, what=f"{direction} conductivity"))
        target, where, _ = self._target(conductivityNode, conductivity, targetRas, targetRadiusMm, targetRegionNode)
        warnings = []
        if target is not None and not target.any():
            warnings.append(f"No conducting voxel lies within {where}: the spread has no target statistics.")
            target = None
        self.log(f"CondNet: solving the E-field on the conductivity of each of {len(members)} networks "
                 f"({', '.join(members)})")
        with _outOfMemoryExplained(device):
            # the coil grid kept on disk, as for the main solve: without it each member would build its own
            spread, rows = ensemble_spread(volumes, coil, pose, float(didt), like=conductivity, roi=target,
                                           device=device, tol=tol, grid_cache_dir=default_cache_dir(),
                                           progress=progress, cancel=cancel)
        if not all(row["converged"] for row in rows):
            warnings.append(f"A solve of the spread stopped short of its tolerance {tol:g}: the spread may be "
                            "inaccurate.")
        stats = {}
        for direction, row in zip(members, rows):
            stats[f"{direction} network"] = {"head_p99": row["head"]["p99"],
                                             **({"target_mean": row["roi"]["mean"]} if target is not None else {})}
        sd = spread.array[np.asarray(conductivity.array) > 0]
        across = {"sd_median": float(np.median(sd)), "sd_p99": float(np.percentile(sd, 99))}
        summary = f"sd of |E| across the {len(members)} networks: median {across['sd_median']:.2f} V/m in the head"
        if target is not None:
            means = ensemble_statistics(rows)["roi_mean"]
            across.update({"target_mean_mean": means["mean"], "target_mean_sd": means["sd"]})
            summary = (f"mean |E| in the target: {means['mean']:.1f} +- {means['sd']:.1f} V/m across the networks ("
                       + ", ".join(f"{d} {row['roi']['mean']:.1f}" for d, row in zip(members, rows)) + "); "
                       + summary)
        stats["across networks"] = across
        self.log(f"CondNet: {summary}")
        info = {"coil": coil.name, "coil_sha256": coil.sha256, "coil_to_ras": pose.tolist(),
                "didt_a_per_s": float(didt), "conductivity": conductivityNode.GetName(),
                "conductivity_node_id": conductivityNode.GetID(),
                "members": {d: node.GetName() for d, node in members.items()}, "solves": rows}
        spreadNode, tableNode = self._writeSpread(conductivityNode, spread, stats, info, summary, spreadNode,
                                                  tableNode, show=show)
        return {"spread": spreadNode, "table": tableNode, "stats": stats, "summary": summary, "warnings": warnings}

    @classmethod
    def spreadSummary(cls, spreadNode, eFieldNode=None, conductivityNode=None) -> str:
        """The one-line summary :meth:`computeEFieldSpread` stored on its spread node ('' for none), with a note when
        ``eFieldNode`` (the E-field shown) was solved at another coil pose, or when the spread is not of
        ``conductivityNode`` (the conductivity chosen)."""
        summary = (spreadNode.GetAttribute(SUMMARY_ATTRIBUTE) or "") if spreadNode is not None else ""
        if not summary:
            return ""
        if conductivityNode is not None and spreadNode.GetAttribute(CONDUCTIVITY_ATTRIBUTE) != conductivityNode.GetID():
            return summary + " (of another conductivity than the one chosen)"
        spreadPose, fieldPose = cls.solvedCoilToRas(spreadNode), cls.solvedCoilToRas(eFieldNode)
        if spreadPose is not None and fieldPose is not None and not cls.samePose(spreadPose, fieldPose):
            summary += " (at an earlier coil pose than the E-field shown)"
        return summary

    def _volumeOutput(self, node, volume, name: str, parent, attributes: dict, created: list):
        """``node`` updated with ``volume`` and put under ``parent`` (the conductivity's transform, which may have
        changed since the node was made), or a new node named ``name`` (added to ``created``) when it is None."""
        if node is not None:
            adapters.updateNodeFromVolume(node, volume)
            node.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)
            return node
        node = adapters.addVolumeNode(self.scene, volume, name, parentTransformNode=parent, attributes=attributes)
        created.append(node)
        return node

    def _tableOutput(self, node, name: str, role: str, created: list):
        """``node``, or a new table node named ``name`` with ``role`` (added to ``created``) when it is None."""
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(name))
            node.SetAttribute(ROLE, role)
            created.append(node)
        return node

    def _writeSpread(self, conductivityNode, spread, stats: dict, info: dict, summary: str, spreadNode, tableNode, *,
                     show: bool):
        name = conductivityNode.GetName()
        created = []
        try:
            spreadNode = self._volumeOutput(spreadNode, spread, f"{name}_Esd",
                                            conductivityNode.GetParentTransformNode(),
                                            {ROLE: "efield-spread", "CondNet.Units": "V/m"}, created)
            spreadNode.SetAttribute("CondNet.Info", json.dumps(info, default=str))
            spreadNode.SetAttribute(SUMMARY_ATTRIBUTE, summary)
            tableNode = self._tableOutput(tableNode, f"{name}_Esd_stats", "efield-spread-statistics", created)
            for node in (spreadNode, tableNode):
                node.SetAttribute(CONDUCTIVITY_ATTRIBUTE, conductivityNode.GetID())
            self._fillTable(tableNode, stats)
            self._styleScalar(spreadNode, UNCERTAINTY_COLORS, "sd of |E| (V/m)", legend=False)
        except Exception:
            adapters.removeNodes(self.scene, created)
            raise
        if show:
            t1 = self.scene.GetNodeByID(conductivityNode.GetAttribute("CondNet.T1") or "")
            self.showOverlay(t1, spreadNode)
        return spreadNode, tableNode

    def _target(self, conductivityNode, conductivity, targetRas, targetRadiusMm: float, targetRegionNode=None):
        """``(voxels, description, about)`` of the target: the conducting voxels under ``targetRegionNode``'s non-zero
        voxels, or within ``targetRadiusMm`` of ``targetRas`` (the conductivity node's local RAS, mm); ``(None, "",
        {})`` without either.  ``about`` goes into the E-field's ``CondNet.Info``."""
        from CondNetLogic.metrics import mask_roi, spherical_roi
        from CondNetLogic.volume import Volume

        conducting = np.asarray(conductivity.array) > 0
        if targetRegionNode is not None:
            name = targetRegionNode.GetName()
            toLocal = self._relativeMatrix(targetRegionNode, conductivityNode) @ adapters.ijkToRasFromNode(
                targetRegionNode)
            image = targetRegionNode.GetImageData()
            # Kept while the region, its place and the grid stay: re-solving after coil moves neither copies nor
            # resamples it.
            key = (targetRegionNode.GetID(), image.GetMTime() if image is not None else None, toLocal.tobytes(),
                   conductivity.shape, conductivity.ijk_to_ras.tobytes())
            if image is None or self._region[0] != key:
                region = adapters.volumeFromNode(targetRegionNode, what="target region")  # a node without voxels raises
                try:
                    self._region = (key, mask_roi(Volume(region.array, toLocal), conductivity))
                except ValueError as err:
                    raise ValueError(f"target region {name}: {err}") from err
            where = f"the target region {name}"
            return self._region[1] & conducting, where, {"region": name, "description": where}
        if targetRas is None:
            return None, "", {}
        where = f"{targetRadiusMm:g} mm around the target at RAS ({', '.join(f'{v:.1f}' for v in targetRas)})"
        return (spherical_roi(conductivity, targetRas, targetRadiusMm) & conducting, where,
                {"ras_mm": [float(v) for v in targetRas], "radius_mm": float(targetRadiusMm), "description": where})

    def strongestPose(
        self,
        conductivityNode,
        coilName: str,
        coilToRas: np.ndarray,
        didt: float,
        targetRas,
        *,
        targetRadiusMm: float = 5.0,
        targetRegionNode=None,
        anglesDeg: Sequence[float] = HANDLE_ANGLES_DEG,
        searchRadiusMm: float = 0.0,
        searchStepMm: float = 5.0,
        scalpOffsetMm: float = 4.0,
        device: str = "auto",
        tol: float = 1e-6,
        progress: Progress = None,
        cancel: Cancel = None,
    ) -> Dict[str, object]:
        """The coil pose with the highest mean |E| in the conducting voxels within ``targetRadiusMm`` of ``targetRas``
        (or under ``targetRegionNode``, a label map, as in :meth:`computeEField`).

        Tried: every handle angle of ``anglesDeg`` (see :meth:`setCoilHandleAngle`) where the coil is (its scalp point,
        ``scalpOffsetMm`` below the centre of ``coilToRas``, and normal) and, with ``searchRadiusMm`` > 0, at the
        scalp points of a ``searchStepMm`` grid within that distance (``CondNetLogic.scalp.scalp_points_around``),
        each with its scalp normal.  One solve per pose on the kept solver of this conductivity (as
        :meth:`computeEField`); no node changes.  ``coilToRas`` and ``targetRas`` are in the conductivity node's
        local RAS (mm).  For a symmetric coil an angle and the one 180 degrees from it give the same |E|, so the
        default ``HANDLE_ANGLES_DEG`` (0 to 165 degrees, 15 apart) covers every orientation.

        Returns ``{"coilToRas": the best pose (4x4), "angle": its handle angle (degrees), "rows": [{"centre" (scalp
        point, RAS mm), "angle", "mean", "max", "p99"} (V/m), ...]}``.
        """
        from CondNetLogic.efield import search_poses, strongest_pose

        if targetRas is None and targetRegionNode is None:
            raise ValueError("choose a target point (or a target region) first")
        pose, coil, conductivity = self._solveInputs(conductivityNode, coilName, coilToRas, didt)
        roi, where, _ = self._target(conductivityNode, conductivity, targetRas, targetRadiusMm, targetRegionNode)
        if not roi.any():
            raise ValueError(f"no conducting voxel lies within {where}: put the target on the cortex, or widen its "
                             "radius")
        start = pose[:3, 3] + scalpOffsetMm * pose[:3, 2]
        poses, points = search_poses(
            self._headMask(conductivityNode) if searchRadiusMm > 0 else None, start, pose[:3, 2],
            lambda point, normal: [geometry.handleDirection(normal, angle) for angle in anglesDeg],
            radius_mm=searchRadiusMm, step_mm=searchStepMm, scalp_offset_mm=scalpOffsetMm,
        )
        rows = [{"centre": [float(v) for v in point], "angle": float(anglesDeg[number % len(anglesDeg)])}
                for number, point in enumerate(points)]
        simulation = self._simulationFor(conductivityNode, device=device, tol=tol, progress=progress, cancel=cancel)
        simulation.primary_field, simulation.warm_start = "auto", False
        self.log(f"CondNet: trying {len(poses)} coil poses at the target ({len(poses) // len(anglesDeg)} centres "
                 f"x {len(anglesDeg)} handle angles), one solve each")
        best, _, stats = strongest_pose(simulation, coil, poses, float(didt), roi, progress=progress, cancel=cancel)
        for row, entry in zip(rows, stats):
            row.update({key: entry[key] for key in ("mean", "max", "p99")})
            centre = "" if searchRadiusMm <= 0 else f"centre ({', '.join(f'{v:.1f}' for v in row['centre'])}), "
            self.log(f"CondNet: {centre}handle angle {row['angle']:g} deg: mean |E| {row['mean']:.1f} V/m, max "
                     f"{row['max']:.1f} V/m within {where}")
        moved = float(np.linalg.norm(np.asarray(rows[best]["centre"]) - start))
        self.log(f"CondNet: the strongest mean |E| at the target, {rows[best]['mean']:.1f} V/m, is at a handle angle "
                 f"of {rows[best]['angle']:g} deg" + (f", {moved:.1f} mm from the coil's point" if moved > 0 else ""))
        return {"coilToRas": poses[best], "angle": rows[best]["angle"], "rows": rows}

    def _reusableEFieldNode(self, node, role: str, conductivityNode):
        """``node`` if it may be updated with an E-field of ``conductivityNode``, else None (a new node).

        Raises (as :meth:`_checkOutputNode`) for a node CondNet did not make; a CondNet node made from
        another conductivity (or of unknown origin) keeps its results: the caller gets None.
        """
        node = self._checkOutputNode(node, role)
        if node is None or conductivityNode is None:
            return node
        if node.GetAttribute(CONDUCTIVITY_ATTRIBUTE) == conductivityNode.GetID():
            return node
        self.log(
            f"CondNet: {node.GetName()} was not computed from {conductivityNode.GetName()}; "
            "keeping it as it is and making a new node"
        )
        return None

    @staticmethod
    def solvedCoilToRas(eFieldNode) -> Optional[np.ndarray]:
        """The coil pose (4x4, conductivity local RAS, mm) an E-field node was computed with, or None.

        Read from the node's ``CondNet.Info``; use it (not the coil markup, which may have moved since)
        to report or export the pose that belongs to the field.
        """
        if eFieldNode is None:
            return None
        try:
            pose = json.loads(eFieldNode.GetAttribute("CondNet.Info") or "{}").get("coil_to_ras")
        except (ValueError, AttributeError):
            return None
        if pose is None:
            return None
        pose = np.asarray(pose, dtype=float)
        return pose if pose.shape == (4, 4) and np.all(np.isfinite(pose)) else None

    @staticmethod
    def targetField(eMagnitudeNode):
        """The target's mean |E| of the solve that made ``eMagnitudeNode``, as a
        :class:`CondNetLogic.dosing.RegionField` (V/m at its dI/dt), read from the node's ``CondNet.Info``; None when
        that solve had no target statistics (or the node is not a CondNet E-field)."""
        from CondNetLogic.dosing import RegionField

        try:
            info = json.loads(eMagnitudeNode.GetAttribute("CondNet.Info") or "{}") if eMagnitudeNode else {}
            target = info.get("target")
            if not target:
                return None
            return RegionField(
                e_v_per_m=float(target["mean_v_per_m"]),
                didt=float(info["didt_a_per_s"]),
                coil_name=str(info["coil"]),
                coil_sha256=str(info["coil_sha256"]),
                didt_max=info.get("didt_max_a_per_s"),
                head=str(info["conductivity_node_id"]),
                region=str(target["description"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def storedThreshold(motorThreshold: str):
        """The :class:`~CondNetLogic.dosing.RegionField` that *Use as motor threshold* stored as JSON; None when empty.

        Raises
        ------
        ValueError
            If the text cannot be read as one (a damaged scene).
        """
        from CondNetLogic.dosing import RegionField

        if not motorThreshold:
            return None
        try:
            return RegionField(**json.loads(motorThreshold))
        except (ValueError, TypeError) as err:
            raise ValueError(f"the stored motor threshold cannot be read ({err}): set it again") from err

    @classmethod
    def _dose(cls, motorThreshold: str, eMagnitudeNode, percentOfThresholdField: float,
              thresholdPercent: Optional[float]):
        """``(reference, threshold dI/dt (A/s), target, dose, problem)`` of E-field dosing; each None when it cannot be
        had (``problem`` says why a set threshold gives no dose)."""
        from CondNetLogic.dosing import motor_equivalent_dose

        if not motorThreshold:
            return None, None, None, None, None
        try:
            reference = cls.storedThreshold(motorThreshold)
        except ValueError as err:
            return None, None, None, None, str(err)
        threshold = abs(reference.didt)
        if thresholdPercent and reference.didt_max is not None:
            threshold = reference.didt_at_percent(thresholdPercent)
        target = cls.targetField(eMagnitudeNode)
        if target is None:
            return reference, threshold, None, None, "the E-field shown has no target"
        try:
            return (reference, threshold, target,
                    motor_equivalent_dose(reference, threshold, target, percentOfThresholdField), None)
        except ValueError as err:
            return reference, threshold, target, None, str(err)

    @classmethod
    def doseSummary(cls, motorThreshold: str, eMagnitudeNode, percentOfThresholdField: float = 100.0,
                    thresholdPercent: Optional[float] = None) -> str:
        """Text for the panel: the motor threshold's field and the motor-equivalent dose at the shown E-field's target.

        ``motorThreshold`` is the JSON of the :class:`~CondNetLogic.dosing.RegionField` that *Use as motor
        threshold* stored (a solve with the coil on the hotspot and the target on the hand knob), or empty;
        ``thresholdPercent`` the measured threshold in % of the coil's maximum output (default, or for a coil without
        a maximum: the output of that solve).  The dose is the output at which the target of ``eMagnitudeNode``'s
        solve gets ``percentOfThresholdField`` % of the threshold's field
        (:func:`CondNetLogic.dosing.motor_equivalent_dose`).
        """
        reference, threshold, target, dose, problem = cls._dose(motorThreshold, eMagnitudeNode,
                                                                percentOfThresholdField, thresholdPercent)
        if not motorThreshold:
            return ("No motor threshold: put the coil on the motor hotspot and the target on the hand knob, compute "
                    "the E-field, click Use as motor threshold and set the measured threshold.")
        if reference is None:
            return problem[0].upper() + problem[1:] + "."
        text = "Motor threshold: "
        if reference.didt_max is not None:
            text += f"{100.0 * threshold / reference.didt_max:.1f} % output, "
        text += (f"dI/dt {threshold / 1e6:.4g} A/us: mean |E| {reference.per_didt * threshold:.1f} V/m within "
                 f"{reference.region}")
        if target is None:
            return text + ". Compute the E-field with the coil over a target for the dose there."
        if dose is None:
            return f"{text}. No dose: {problem}."
        text += (f".\nDose for {percentOfThresholdField:g} % of that field ({dose.wanted_e:.1f} V/m) at the target: "
                 f"dI/dt {abs(dose.didt) / 1e6:.4g} A/us")
        if dose.output_percent is not None:
            text += f", {dose.output_percent:.1f} % output"
        if dose.percent_of_motor_threshold is not None:
            text += f", {dose.percent_of_motor_threshold:.0f} % of the motor threshold"
        return text + "." + "".join(f"\nNote: {note}." for note in dose.notes)

    @classmethod
    def doseRecord(cls, motorThreshold: str, eMagnitudeNode, percentOfThresholdField: float = 100.0,
                   thresholdPercent: Optional[float] = None) -> dict:
        """E-field dosing for an export sidecar (V/m, A/s, percent): the motor threshold's solve and dI/dt, the shown
        E-field's target field and the dose, or why there is none; ``{}`` when no motor threshold is set."""
        reference, threshold, target, dose, problem = cls._dose(motorThreshold, eMagnitudeNode,
                                                                percentOfThresholdField, thresholdPercent)
        if not motorThreshold:
            return {}
        return {
            "motor_threshold": None if reference is None else dataclasses.asdict(reference),
            "motor_threshold_didt_a_per_s": threshold,
            "target": None if target is None else dataclasses.asdict(target),
            "percent_of_threshold_field": float(percentOfThresholdField),
            "dose": None if dose is None else dose.to_dict(),
            "no_dose_because": problem,
        }

    @staticmethod
    def samePose(pose, otherPose, *, atolMm: float = 1e-3) -> bool:
        """True when two 4x4 coil poses agree (rotation to ``atolMm``/1000, translation to ``atolMm``)."""
        pose, otherPose = np.asarray(pose, dtype=float), np.asarray(otherPose, dtype=float)
        return bool(
            np.allclose(pose[:3, :3], otherPose[:3, :3], atol=atolMm * 1e-3, rtol=0)
            and np.allclose(pose[:3, 3], otherPose[:3, 3], atol=atolMm, rtol=0)
        )

    def _uniformModel(self, conductivityNode, conductivity, labelNode, labelMapping, uniformTable):
        from CondNetLogic.conductivity import get_table, labels_to_tissues, read_label_mapping, resource_path

        labels = adapters.volumeFromNode(labelNode, what="label map")
        if not conductivity.same_grid(labels) or not np.allclose(
            self._relativeMatrix(labelNode, conductivityNode), np.eye(4), atol=1e-6
        ):
            raise ValueError(f"the label map {labelNode.GetName()} is not on the conductivity grid (or sits under "
                             "another transform); resample it first")
        mappingPath = labelMapping
        if labelMapping in ("samseg", "synthseg"):
            mappingPath = str(resource_path("tissue_maps", f"{labelMapping}_labels.csv"))
        tissues = labels_to_tissues(labels.array, read_label_mapping(mappingPath))
        tableName = uniformTable or conductivityNode.GetAttribute("CondNet.Table") or "A"
        from CondNetLogic.conductivity import tissues_to_conductivity

        sigma = tissues_to_conductivity(tissues, get_table(tableName))
        return conductivity.with_array(sigma.astype(np.float32)), tissues

    def _statistics(self, eMagnitude, conductivity, labelNode, tissues) -> dict:
        """``{region: roi_stats}`` for the head (conductivity > 0) and, with a label map, grey matter."""
        from CondNetLogic.conductivity import TISSUES
        from CondNetLogic.metrics import roi_stats

        stats = {"head": roi_stats(eMagnitude, np.asarray(conductivity.array) > 0)}
        if tissues is not None:
            gm = tissues == TISSUES.index("gm")
            if gm.any():
                stats["gm"] = roi_stats(eMagnitude, gm)
        return stats

    def _generalizedError(
        self, result, uniform, uniformKey, pose, coil, didt, device, tol, tissues, progress, cancel
    ) -> dict:
        """GE (%, paper Eq. 6) of |E| against the uniform-conductivity model, in grey matter (else the head)."""
        from CondNetLogic.conductivity import TISSUES
        from CondNetLogic.efield import EFieldSimulation
        from CondNetLogic.metrics import generalized_error
        from CondNetLogic.primary_field import default_cache_dir

        if self._uniformSimulation is None or self._uniformKey != uniformKey:
            self._uniformSimulation = None
            self.log("CondNet: preparing the solver of the uniform-conductivity model")
            self._uniformSimulation = EFieldSimulation(
                uniform, device=device, tol=tol, grid_cache_dir=default_cache_dir(), progress=progress, cancel=cancel
            )
            self._uniformKey = uniformKey
        reference = self._uniformSimulation.solve(coil, pose, float(didt), progress=progress, cancel=cancel)
        gm = tissues == TISSUES.index("gm")
        region = "gm" if gm.any() else "head"
        roi = gm if gm.any() else np.asarray(uniform.array) > 0
        ge = generalized_error(np.asarray(reference.e_magnitude.array), np.asarray(result.e_magnitude.array), roi)
        return {region: {"ge_vs_uniform_percent": ge}}

    def _writeEField(
        self, conductivityNode, result, stats, coil, pose, didt, eVectorNode, eMagnitudeNode, tableNode, *, show: bool
    ):
        parent = conductivityNode.GetParentTransformNode()
        name = conductivityNode.GetName()
        info = dict(result.info)
        info.update(
            {
                "coil": coil.name,
                "coil_sha256": coil.sha256,
                "coil_to_ras": np.asarray(pose).tolist(),
                "didt_a_per_s": float(didt),
                "didt_max_a_per_s": coil.didt_max,
                "conductivity": name,
                "conductivity_node_id": conductivityNode.GetID(),
            }
        )
        infoText = json.dumps(info, default=str)
        magnitude = result.e_magnitude.with_array(np.asarray(result.e_magnitude.array, dtype=np.float32))
        vector = result.e_vector.with_array(np.asarray(result.e_vector.array, dtype=np.float32))
        created = []
        try:
            eMagnitudeNode = self._volumeOutput(eMagnitudeNode, magnitude, f"{name}_Emag", parent,
                                                {ROLE: "efield-magnitude", "CondNet.Units": "V/m"}, created)
            eVectorNode = self._volumeOutput(eVectorNode, vector, f"{name}_Evector", parent,
                                             {ROLE: "efield-vector", "CondNet.Units": "V/m", "CondNet.Frame": "RAS"},
                                             created)
            for node in (eMagnitudeNode, eVectorNode):
                node.SetAttribute("CondNet.Info", infoText)
            tableNode = self._tableOutput(tableNode, f"{name}_Estats", "efield-statistics", created)
            for node in (eMagnitudeNode, eVectorNode, tableNode):
                node.SetAttribute(CONDUCTIVITY_ATTRIBUTE, conductivityNode.GetID())
            self._fillTable(tableNode, stats)
            self._styleScalar(eMagnitudeNode, EFIELD_COLORS, "|E| (V/m)")
        except Exception:
            adapters.removeNodes(self.scene, created)
            raise
        if show:
            t1 = self.scene.GetNodeByID(conductivityNode.GetAttribute("CondNet.T1") or "")
            self.showOverlay(t1, eMagnitudeNode)
        return {"eVector": eVectorNode, "eMagnitude": eMagnitudeNode, "table": tableNode, "stats": stats, "info": info}

    @staticmethod
    def _fillTable(tableNode, stats: dict) -> None:
        """Long format: one row per (region, statistic) with its value and unit."""
        rows = [
            (region, name, float(value), _unitOf(name))
            for region, entries in stats.items()
            for name, value in entries.items()
        ]
        table = tableNode.GetTable()
        wasModifying = tableNode.StartModify()
        table.Initialize()
        for index, (columnName, arrayClass) in enumerate(
            (
                ("Region", vtk.vtkStringArray),
                ("Statistic", vtk.vtkStringArray),
                ("Value", vtk.vtkDoubleArray),
                ("Unit", vtk.vtkStringArray),
            )
        ):
            column = arrayClass()
            column.SetName(columnName)
            for row in rows:
                column.InsertNextValue(row[index])
            table.AddColumn(column)
        tableNode.EndModify(wasModifying)
        tableNode.Modified()

    # ------------------------------------------------------------------------------------ export
    def exportResults(
        self,
        folder: str,
        nodes: Dict[str, object],
        *,
        coilToRas: Optional[np.ndarray] = None,
        extension: str = ".nii.gz",
        overwrite: bool = False,
        metadata: Optional[dict] = None,
    ) -> List[Path]:
        """Write result volumes and tables (``{file stem: node}``) and the coil matrix into ``folder``.

        Files: ``<stem><extension>`` for each volume node (NIfTI ``.nii.gz`` or NRRD ``.nrrd``), ``<stem>.csv``
        for each table node (the E-field statistics: region, statistic, value, unit), ``coil_to_ras.txt``
        (4x4, RAS mm, in the volumes' frame) when ``coilToRas`` is given, and ``condnet_export.json`` (node
        names, units, coil pose, the solver and prediction info, the tables' rows).

        Raises
        ------
        FileExistsError
            Listing every file that exists, before anything is written, unless ``overwrite``.
        ValueError
            For an unsupported extension or no nodes.
        """
        if extension not in (".nii.gz", ".nii", ".nrrd"):
            raise ValueError(f"export format must be .nii.gz, .nii or .nrrd, got {extension!r}")
        nodes = {stem: node for stem, node in nodes.items() if node is not None}
        if not nodes and coilToRas is None:
            raise ValueError("nothing to export: compute a conductivity or E-field first")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder: choose a folder to export into")
        targets = {stem: folder / f"{stem}{'.csv' if _isTable(node) else extension}" for stem, node in nodes.items()}
        extra = [folder / "coil_to_ras.txt"] if coilToRas is not None else []
        sidecar = folder / "condnet_export.json"
        existing = [str(p) for p in list(targets.values()) + extra + [sidecar] if p.exists()]
        if existing and not overwrite:
            raise FileExistsError("these files exist already: " + ", ".join(existing))
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        description = {"files": {}, "frame": "RAS", "units_length": "mm"}
        for stem, node in nodes.items():
            if _isTable(node):
                rows = _tableRows(node)
                with open(targets[stem], "w", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerows(rows)
                written.append(targets[stem])
                description["files"][targets[stem].name] = {"node": node.GetName(), "role": _role(node),
                                                            "columns": rows[0], "rows": rows[1:]}
                continue
            written.append(self.writeVolumeNode(node, str(targets[stem]), overwrite=True))
            description["files"][targets[stem].name] = {
                "node": node.GetName(),
                "units": node.GetAttribute("CondNet.Units"),
                "role": _role(node),
                "ijk_to_ras": adapters.ijkToRasFromNode(node).tolist(),
                "info": json.loads(node.GetAttribute("CondNet.Info") or "{}"),
            }
        if coilToRas is not None:
            pose = np.asarray(coilToRas, dtype=float)
            np.savetxt(extra[0], pose, fmt="%.10g", header="coil_to_ras: coil frame -> RAS, mm (4x4)")
            written.append(extra[0])
            description["coil_to_ras"] = pose.tolist()
        description.update(metadata or {})
        sidecar.write_text(json.dumps(description, indent=2, default=str) + "\n", encoding="utf-8")
        written.append(sidecar)
        return written


def _isTable(node) -> bool:
    return bool(node.IsA("vtkMRMLTableNode"))


def _tableRows(tableNode) -> List[list]:
    """A table node's column names, then one list of values per row (numbers as numbers)."""
    table = tableNode.GetTable()
    columns = [table.GetColumn(index) for index in range(table.GetNumberOfColumns())]
    rows = [[column.GetName() for column in columns]]
    for row in range(table.GetNumberOfRows()):
        rows.append([column.GetValue(row) for column in columns])
    return rows


@contextlib.contextmanager
def _outOfMemoryExplained(device: str, onOutOfMemory: Optional[Callable[[], None]] = None):
    """Turn running out of memory in an E-field solve into an error that tells the user what to do, after calling
    ``onOutOfMemory`` (to free what the solve held); other errors pass unchanged."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        from CondNetLogic.errors import is_out_of_memory

        if not is_out_of_memory(err):
            raise
        if onOutOfMemory is not None:
            onOutOfMemory()
        raise RuntimeError(
            f"out of memory while solving the E-field (device '{device}'; a GPU that runs out goes on on the "
            "CPU by itself): close other programs, or crop/resample the conductivity to a coarser grid"
        ) from err


def _unitOf(statistic: str) -> str:
    """Unit of a :func:`CondNetLogic.metrics.roi_stats` entry (or of the GE)."""
    if statistic.endswith("_mm3"):
        return "mm^3"
    if statistic.endswith("_percent"):
        return "%"
    if statistic.startswith("n_"):
        return "voxels"
    return "V/m"
