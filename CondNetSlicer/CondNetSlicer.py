"""CondNet: personalised conductivity head models from T1/T2 MRI and TMS E-field simulation in 3D Slicer.

Module, parameter node, widget and self-test.  The logic (:class:`CondNetSlicerLib.logic.CondNetSlicerLogic`)
and every helper live in ``CondNetSlicerLib`` and the Slicer-free ``CondNetLogic`` package, both imported
lazily: Slicer imports this file at startup, where only the standard library, ``slicer``, ``vtk`` and
``qt`` may be touched (a top-level torch import would break Slicer for users without torch).
"""

import dataclasses
import json
import os
import pathlib
import sys
import tempfile
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLModelNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLTableNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Folder holding ``CondNetLogic/`` and ``Resources/``: the repository root in a source tree, the
#: ``lib/Slicer-X.Y`` folder of an installed extension (CMakeLists.txt installs them with ``../`` paths).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(PACKAGE_PARENT, "CondNetLogic", "__init__.py")) and PACKAGE_PARENT not in sys.path:
    sys.path.append(PACKAGE_PARENT)

DOCS_URL = "https://github.com/condnet-slicer/condnet-slicer/blob/main/docs/slicer.md"
MNI152_URL = "https://github.com/Washington-University/HCPpipelines/raw/master/global/templates/"
#: SHA-256 of the HCP Pipelines MNI152 2 mm templates (computed from the files in ../shared/data/mni152).
MNI152_T1_SHA256 = "b920eacdf451eb563652d9a51e11cf3d82ac5703eaf67a3dd2f5fa345e9a3edf"
MNI152_T2_SHA256 = "707f7d1a81edfa019fb723a29af7a90c5484137308a60cae200337d1b20fb688"


def resourcePath(*parts: str) -> str:
    """Path of a file in the shared ``Resources/`` folder, in a source tree and once installed."""
    return os.path.join(PACKAGE_PARENT, "Resources", *parts)


def __getattr__(name):
    # The logic class is imported on first use, keeping numpy and CondNetLogic out of Slicer's startup.
    if name == "CondNetSlicerLogic":
        from CondNetSlicerLib.logic import CondNetSlicerLogic

        return CondNetSlicerLogic
    raise AttributeError(name)


#
# CondNetSlicer
#


class CondNetSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer's Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CondNet")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Neuroscience")]
        self.parent.dependencies = []
        self.parent.contributors = ["CondNet for 3D Slicer contributors"]
        self.parent.helpText = _(
            "Estimate a personalised, non-uniform conductivity head model from T1/T2 MRI with CondNet, place a TMS "
            "coil on the scalp and compute the induced electric field. "
            f'See the <a href="{DOCS_URL}">user guide</a>. Research use only, not for clinical decisions.'
        )
        self.parent.acknowledgementText = _(
            'CondNet is described in: E. A. Rashed, J. Gomez-Tames, A. Hirata, "Deep learning-based development '
            'of personalized human head model with non-uniform conductivity for brain stimulation", IEEE '
            "Transactions on Medical Imaging 39(7):2351-2362, 2020, doi:10.1109/TMI.2020.2969682. "
            "The sample head is the MNI ICBM152 template as distributed with the HCP Pipelines."
        )
        iconPath = resourcePath("Icons", "CondNetSlicer.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the MNI152 T1/T2 head (2 mm, HCP Pipelines) to the Sample Data module."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="CondNet",
        sampleName="CondNetMNI152",
        thumbnailFileName=resourcePath("Icons", "CondNetSlicer.png"),
        uris=[MNI152_URL + "MNI152_T1_2mm.nii.gz", MNI152_URL + "MNI152_T2_2mm.nii.gz"],
        fileNames=["MNI152_T1_2mm.nii.gz", "MNI152_T2_2mm.nii.gz"],
        checksums=[f"SHA256:{MNI152_T1_SHA256}", f"SHA256:{MNI152_T2_SHA256}"],
        nodeNames=["MNI152_T1", "MNI152_T2"],
    )


#
# CondNetSlicerParameterNode
#


@parameterNodeWrapper
class CondNetSlicerParameterNode:
    """State of the panel; widgets bind to these fields through their ``SlicerParameterName`` property.

    t1Volume, t2Volume: input scans.  conductivitySet: table(s) of Table I to produce.  weightsPath: empty
    (".") = the shipped weights.  fullPrecision: run the networks in float32 (else float16 on a GPU and
    bfloat16 on CPUs with native support).  keepDirections: also keep each slicing direction's conductivity, for the
    E-field spread across the networks (eFieldSpreadVolume: sd of |E|, V/m; eFieldSpreadTable).  handleAngleDeg: 0 =
    handle posterior, positive towards lateral (away from the midline), so the default 45 is posterior-lateral on
    either hemisphere (on the midline positive turns towards the subject's left).  eegPositionsMarkup: the point list
    of 10-10 positions that *Show EEG positions* made.  didtAPerUs: coil current slope in A/us (1 A/us = 1e6 A/s).
    targetMarkup, targetRadiusMm: a point list whose first point is the stimulation target, and the radius (mm) of
    the sphere whose |E| statistics the table reports; targetRegion: a label map whose non-zero voxels are the target
    instead of that sphere (an fMRI cluster, an atlas region).  searchRadiusMm: *Best pose at target* also tries scalp
    centres within this distance (mm; 0: handle angles only).  motorThreshold: JSON of the target field stored by
    *Use as motor threshold* (a solve with the coil on the motor hotspot, :class:`CondNetLogic.dosing.RegionField`),
    empty when none; motorThresholdPercent: the measured motor threshold, % of the coil's maximum output (set to that
    solve's output by the button); dosePercent: the field wanted at a target in percent of the threshold's field.
    Outputs are the nodes CondNet made last.
    """

    t1Volume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    registerT2: bool = False
    conductivitySet: Annotated[str, Choice(["A", "B", "A+B", "custom"])] = "A"
    customTablePath: pathlib.Path
    weightsPath: pathlib.Path
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    fullPrecision: bool = False
    keepDirections: bool = False
    conductivityVolume: vtkMRMLScalarVolumeNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
    coilName: str = ""
    coilMarkup: vtkMRMLMarkupsFiducialNode
    coilModel: vtkMRMLModelNode
    coilTransform: vtkMRMLLinearTransformNode
    handleAngleDeg: Annotated[float, WithinRange(-180.0, 180.0)] = 45.0
    scalpOffsetMm: Annotated[float, WithinRange(0.0, 30.0)] = 4.0
    didtAPerUs: Annotated[float, WithinRange(0.1, 1000.0)] = 100.0
    landmarks: vtkMRMLMarkupsFiducialNode
    eegPosition: Annotated[
        str,
        Choice(
            ["C3", "C4", "Cz", "C1", "C2", "C5", "C6", "T7", "T8", "Fpz", "AFz", "Fz", "FCz", "CPz", "Pz", "POz", "Oz",
             "F3", "F4", "F1", "F2", "F5", "F6", "F7", "F8", "Fp1", "Fp2", "P3", "P4", "P1", "P2", "P5", "P6", "P7",
             "P8", "O1", "O2"]
        ),
    ] = "C3"
    eegPositionsMarkup: vtkMRMLMarkupsFiducialNode
    labelMap: vtkMRMLLabelMapVolumeNode
    labelMapping: Annotated[str, Choice(["samseg", "synthseg"])] = "samseg"
    autoUpdate: bool = False
    targetMarkup: vtkMRMLMarkupsFiducialNode
    targetRadiusMm: Annotated[float, WithinRange(1.0, 50.0)] = 5.0
    targetRegion: vtkMRMLLabelMapVolumeNode
    searchRadiusMm: Annotated[float, WithinRange(0.0, 30.0)] = 0.0
    motorThreshold: str = ""
    motorThresholdPercent: Annotated[float, WithinRange(1.0, 100.0)] = 50.0
    dosePercent: Annotated[float, WithinRange(10.0, 300.0)] = 100.0
    eMagnitudeVolume: vtkMRMLScalarVolumeNode
    eVectorVolume: vtkMRMLVectorVolumeNode
    statisticsTable: vtkMRMLTableNode
    eFieldSpreadVolume: vtkMRMLScalarVolumeNode
    eFieldSpreadTable: vtkMRMLTableNode
    exportFolder: pathlib.Path
    exportFormat: Annotated[str, Choice([".nii.gz", ".nrrd"])] = ".nii.gz"


def _pathText(path) -> str:
    """'' for an unset path parameter (``pathlib.Path()`` is '.')."""
    text = str(path) if path is not None else ""
    return "" if text in ("", ".") else text


#
# CondNetSlicerWidget
#


class CondNetSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: connects widgets to the parameter node and runs the logic without freezing the GUI."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None
        self._warmup = None
        self._busy = False
        self._cancelRequested = False
        self._observedMarkup = None
        self._observedTarget = None
        self._cpuForShortGpu = {}  # device choice -> the user's answer to "use the CPU?" (GPU short of memory)
        self._appliedHandleAngle = None
        self._modelScalpOffset = None  # the scalp offset (mm) the coil model was last drawn with
        self._modelCoilName = None  # the coil the model was last drawn for
        self._updatingCoil = False
        self._coilMovedWhileBusy = False
        self._reportedMissingCoil = ""
        self._coilMaxDidt = {}  # coil name -> maximum dI/dt (A/us), None: unreadable or none given; emptied on entering

    def resourcePath(self, filename: str) -> str:
        # The shared Resources/ folder sits beside this module's folder, not inside it (see CMakeLists.txt).
        return resourcePath(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CondNetSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        from CondNetSlicerLib.logic import CondNetSlicerLogic

        self.logic = CondNetSlicerLogic()
        self.logic.logCallback = self._log
        self.ui.coilComboBox.addItems(self.logic.coilNames())

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.estimateButton.connect("clicked(bool)", self.onEstimateButton)
        self.ui.showUncertaintyButton.connect("clicked(bool)", self.onShowUncertaintyButton)
        self.ui.coilComboBox.connect("currentTextChanged(QString)", self.onCoilChanged)
        self.ui.msoSpinBox.connect("valueChanged(double)", self.onMsoChanged)
        self.ui.placeCoilButton.connect("clicked(bool)", self.onPlaceCoilButton)
        self.ui.snapCoilButton.connect("clicked(bool)", self.onSnapCoilButton)
        self.ui.loadPoseButton.connect("clicked(bool)", self.onLoadPoseButton)
        self.ui.presetButton.connect("clicked(bool)", self.onPresetButton)
        self.ui.eegPositionsButton.connect("clicked(bool)", self.onEegPositionsButton)
        self.ui.coilOverTargetButton.connect("clicked(bool)", self.onCoilOverTargetButton)
        self.ui.bestPoseButton.connect("clicked(bool)", self.onBestPoseButton)
        self.ui.computeEFieldButton.connect("clicked(bool)", self.onComputeEFieldButton)
        self.ui.eFieldSpreadButton.connect("clicked(bool)", self.onEFieldSpreadButton)
        self.ui.motorThresholdButton.connect("clicked(bool)", self.onMotorThresholdButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        for process in (self._process, self._warmup):
            if process is not None and process.isRunning():
                process.cancel()
        self._observeCoilMarkup(None)
        self._observeTarget(None)
        self.removeObservers()

    def enter(self) -> None:
        self._coilMaxDidt.clear()  # coil files may have been edited meanwhile
        self._updateCoilList()
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def _updateCoilList(self) -> None:
        """List the coil files as they are now: one added to or removed from the user coil folder shows on entering.

        The shown coil stays, and no coil change reaches the parameter node (signals are blocked); a coil whose file
        was removed is reported by ``_onParameterNodeModified``.
        """
        combo = self.ui.coilComboBox
        names = self.logic.coilNames()
        if names == [combo.itemText(index) for index in range(combo.count)]:
            return
        current = combo.currentText
        wasBlocked = combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(combo.findText(current))
        finally:
            combo.blockSignals(wasBlocked)

    def onSceneStartClose(self, caller, event) -> None:
        # Work on the closing scene's nodes stops: an in-process solve at its next iteration (nothing is added),
        # a background estimate now (its inputs are gone).
        self._cancelRequested = True
        if self._process is not None:
            self._process.cancel()
        self.setParameterNode(None)
        self.logic.clearCaches()
        self._cpuForShortGpu.clear()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(CondNetSlicerParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.t1Volume:
            firstVolume = self.logic.firstInputVolume()  # a scan: no label map, no CondNet output
            if firstVolume:
                self._parameterNode.t1Volume = firstVolume
        if not self._parameterNode.coilName and self.ui.coilComboBox.count:
            self._parameterNode.coilName = self.ui.coilComboBox.itemText(0)

    def setParameterNode(self, inputParameterNode: Optional[CondNetSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()
        else:
            self._observeCoilMarkup(None)
            self._observeTarget(None)

    # ------------------------------------------------------------------------------- state
    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """The one place that decides what is enabled, and that follows parameter changes."""
        p = self._parameterNode
        if p is None:
            return
        coilInstalled = bool(p.coilName) and self.ui.coilComboBox.findText(p.coilName) >= 0
        if coilInstalled:
            self._reportedMissingCoil = ""
            if self.ui.coilComboBox.currentText != p.coilName:
                self.ui.coilComboBox.setCurrentText(p.coilName)
        elif p.coilName:
            # e.g. a scene saved where other coils are installed: show no coil rather than a wrong one
            if self.ui.coilComboBox.currentText:
                self.ui.coilComboBox.setCurrentIndex(-1)
            if self._reportedMissingCoil != p.coilName:
                self._reportedMissingCoil = p.coilName
                self._log(f"The coil '{p.coilName}' of this scene is not installed here: choose a coil in the list.")
        # Only a CondNet coil markup is snapped and turned: another point list selected here is left alone.
        isCoil = self.logic.isCoilMarkup(p.coilMarkup)
        self._observeCoilMarkup(p.coilMarkup if isCoil else None)
        self._observeTarget(p.targetMarkup)
        if p.coilMarkup is None:  # deleted (or the selector cleared): no pose, no coil shown
            self.logic.setCoilModelVisible(p.coilModel, False)
        self.ui.statisticsTableView.setMRMLTableNode(p.statisticsTable)
        hasPoint = isCoil and self.logic.hasPlacedPoint(p.coilMarkup)
        idle = not self._busy
        self.ui.customTablePathLineEdit.enabled = p.conductivitySet == "custom"
        self._showOutputPercent(p, coilInstalled)
        self.ui.estimateButton.enabled = idle and bool(p.t1Volume)
        self.ui.showUncertaintyButton.enabled = idle and bool(p.uncertaintyVolume)
        self.ui.placeCoilButton.enabled = idle and bool(p.conductivityVolume)
        self.ui.snapCoilButton.enabled = idle and bool(p.conductivityVolume) and hasPoint
        self.ui.loadPoseButton.enabled = idle and bool(p.conductivityVolume)
        self.ui.presetButton.enabled = idle and bool(p.conductivityVolume and p.landmarks)
        self.ui.eegPositionsButton.enabled = self.ui.presetButton.enabled
        hasTarget = self.logic.hasPlacedPoint(p.targetMarkup)
        self.ui.coilOverTargetButton.enabled = idle and bool(p.conductivityVolume) and hasTarget
        self.ui.computeEFieldButton.enabled = idle and bool(p.conductivityVolume) and hasPoint and coilInstalled
        self.ui.bestPoseButton.enabled = self.ui.computeEFieldButton.enabled and (hasTarget or bool(p.targetRegion))
        self.ui.motorThresholdButton.enabled = idle and self.logic.targetField(p.eMagnitudeVolume) is not None
        self.ui.eFieldSpreadButton.enabled = (self.ui.computeEFieldButton.enabled
                                              and len(self.logic.directionNodes(p.conductivityVolume)) >= 2)
        self.ui.spreadLabel.text = self.logic.spreadSummary(p.eFieldSpreadVolume, p.eMagnitudeVolume,
                                                             p.conductivityVolume)
        try:
            reference = self.logic.storedThreshold(p.motorThreshold)
        except ValueError:  # a damaged scene: the dose text says so
            reference = None
        self.ui.motorThresholdSpinBox.enabled = reference is not None and reference.didt_max is not None
        self.ui.doseLabel.text = self.logic.doseSummary(p.motorThreshold, p.eMagnitudeVolume, p.dosePercent,
                                                        p.motorThresholdPercent)
        self.ui.exportButton.enabled = (
            idle and bool(_pathText(p.exportFolder)) and bool(p.conductivityVolume or p.eMagnitudeVolume)
        )
        self.ui.cancelButton.visible = self._busy
        self.ui.progressBar.visible = self._busy
        # Handle angle edited in the panel: turn the coil (not when the angle was read from a drag).
        if (
            idle
            and hasPoint
            and p.conductivityVolume
            and not self._updatingCoil
            and self.logic.coilMarkupHasOrientation(p.coilMarkup)
        ):
            if self._appliedHandleAngle is None:
                # A coil the panel has not turned yet (e.g. from a loaded scene): the coil is the truth, so
                # show its angle instead of turning it to the stored one (which an older convention may have set).
                with slicer.util.tryWithErrorDisplay(_("Failed to read the coil's handle angle."), waitCursor=True):
                    self._appliedHandleAngle = round(self.logic.coilHandleAngle(p.coilMarkup, p.conductivityVolume),
                                                     6)
                if abs(p.handleAngleDeg - self._appliedHandleAngle) > 1e-6:
                    self._updatingCoil = True
                    try:
                        p.handleAngleDeg = self._appliedHandleAngle
                    finally:
                        self._updatingCoil = False
                if coilInstalled:  # the model may show another coil markup's pose, or be hidden since a deletion
                    with slicer.util.tryWithErrorDisplay(_("Failed to show the coil."), waitCursor=True):
                        self._updateCoilModel()
            if abs(p.handleAngleDeg - self._appliedHandleAngle) > 1e-6:
                with slicer.util.tryWithErrorDisplay(_("Failed to turn the coil."), waitCursor=True):
                    self._appliedHandleAngle = p.handleAngleDeg
                    self.logic.setCoilHandleAngle(p.coilMarkup, p.conductivityVolume, p.handleAngleDeg)
                    self._updateCoilModel()
            elif coilInstalled and self._modelScalpOffset is not None and (
                    p.scalpOffsetMm != self._modelScalpOffset or p.coilName != self._modelCoilName):
                with slicer.util.tryWithErrorDisplay(_("Failed to show the coil."), waitCursor=True):
                    self._updateCoilModel()  # the scalp offset moved the coil along its normal

    def onCoilChanged(self, text: str) -> None:
        p = self._parameterNode
        if p and text and p.coilName != text:
            p.coilName = text
            # Redraw only a placed coil: a coil markup without its point (Place coil pressed, no click yet) has no pose.
            placed = self.logic.isCoilMarkup(p.coilMarkup) and p.coilMarkup.GetNumberOfControlPoints() > 0
            if placed and p.conductivityVolume and not self._busy:
                with slicer.util.tryWithErrorDisplay(_("Failed to show the coil."), waitCursor=True):
                    self._updateCoilModel()

    def _coilMaxDidtAPerUs(self, name: str) -> Optional[float]:
        """The coil's dI/dt at maximum stimulator output (A/us), or None when its file cannot be read or gives none."""
        if name not in self._coilMaxDidt:
            try:
                maxDidt = self.logic.coilMaxDidt(name)
            except (ValueError, OSError):  # reported when the E-field is computed with it
                maxDidt = None
            self._coilMaxDidt[name] = None if maxDidt is None else maxDidt / 1e6
        return self._coilMaxDidt[name]

    def _showOutputPercent(self, p, coilInstalled: bool) -> None:
        """The output box shows dI/dt as a percentage of the coil's maximum; without one (a coil file that cannot be
        read or gives no maximum) it is disabled and dI/dt is used as typed."""
        maxDidt = self._coilMaxDidtAPerUs(p.coilName) if coilInstalled else None
        box = self.ui.msoSpinBox
        box.enabled = maxDidt is not None
        if maxDidt is not None and abs(box.value - 100.0 * p.didtAPerUs / maxDidt) >= 0.05:
            wasBlocked = box.blockSignals(True)  # showing the percentage must not set dI/dt again
            box.value = 100.0 * p.didtAPerUs / maxDidt
            box.blockSignals(wasBlocked)

    def onMsoChanged(self, percent: float) -> None:
        """Output edited: dI/dt = percent x the coil's maximum (A/us, to the dI/dt box's 0.1 A/us)."""
        p = self._parameterNode
        maxDidt = self._coilMaxDidtAPerUs(p.coilName) if p and p.coilName else None
        if maxDidt is not None:
            p.didtAPerUs = min(max(round(percent * maxDidt / 100.0, 1), 0.1), 1000.0)

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        slicer.util.showStatusMessage(text, 3000)

    def _logProcessLine(self, line: str) -> None:
        # Progress-bar redraws (tqdm: "42%|####  |") go to the progress bar, not the log.
        if "%|" not in line:
            self._log(line)

    def _setBusy(self, busy: bool, message: str = "") -> None:
        self._busy = busy
        self._cancelRequested = False
        self.ui.progressBar.value = 0
        self.ui.progressBar.setFormat("%p%")  # not the last run's message
        if message:
            self._log(message)
        self._onParameterNodeModified()
        if not busy and self._coilMovedWhileBusy:
            # The coil was dragged while the GUI was busy: snap it (and re-solve) once the current handler is done.
            self._coilMovedWhileBusy = False
            qt.QTimer.singleShot(0, self._onCoilMarkupMoved)

    def _showProgress(self, fraction: float, message: str) -> None:
        """Progress of the background process (called from its QTimer poll: the GUI is not blocked)."""
        self.ui.progressBar.value = int(round(100 * max(0.0, min(1.0, fraction))))
        self.ui.progressBar.setFormat(f"%p% {message[-60:]}")

    def _onProgress(self, fraction: float, message: str) -> None:
        """Progress of in-process work: also lets the event loop run, so the GUI stays alive and Cancel works."""
        self._showProgress(fraction, message)
        slicer.app.processEvents()

    def _isCancelled(self) -> bool:
        return self._cancelRequested

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self._log("Cancelling...")
        if self._process is not None:
            self._process.cancel()

    def _ensureRequirements(self) -> None:
        from CondNetSlicerLib import install

        install.ensureRequirements(resourcePath("requirements.txt"), interactive=True, logCallback=self._log)

    def _resolveDevice(self, device: str) -> str:
        """Log what the device choice means; offer the CPU up front when the GPU is short of memory."""
        from CondNetSlicerLib import install

        report = install.deviceReport(device)
        self._log(
            f"Device: {report['name']} (torch {report['torch']}, CUDA {report['cuda']})"
            + (f", {report['free_gib']:.1f} of {report['total_gib']:.1f} GiB free" if "free_gib" in report else "")
        )
        if report["device"] == "cuda" and report["free_gib"] < 4.0:
            # Asked once per device choice until the scene closes: not again on every coil drag (Auto update).
            if device not in self._cpuForShortGpu:
                self._cpuForShortGpu[device] = slicer.util.confirmYesNoDisplay(
                    f"The GPU has only {report['free_gib']:.1f} GiB free. Run on the CPU instead (slower, but will "
                    "not run out of GPU memory)? The answer holds until the scene is closed."
                )
            if self._cpuForShortGpu[device]:
                self._log("Running on the CPU: the GPU is short of memory.")
                return "cpu"
        return report["device"] if device == "auto" else device

    # ------------------------------------------------------------------------------- conductivity
    def onEstimateButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the conductivity estimation."), waitCursor=True):
            p = self._parameterNode
            tables = self.logic.tablesFor(p.conductivitySet, _pathText(p.customTablePath))
            self._ensureRequirements()
            device = self._resolveDevice(p.device)
            self._setBusy(True, f"Estimating conductivity ({', '.join(tables)}) of {p.t1Volume.GetName()}...")
            try:
                t1Node = p.t1Volume
                self._process = self.logic.startConductivityProcess(
                    t1Node,
                    p.t2Volume,
                    weightsPath=_pathText(p.weightsPath),
                    device=device,
                    precision="float32" if p.fullPrecision else "auto",
                    register=p.registerT2,
                    tables=tables,
                    keepDirections=p.keepDirections,
                    logCallback=self._logProcessLine,
                    progressCallback=self._showProgress,
                    completedCallback=lambda code: self._onEstimateFinished(code, t1Node, tables),
                )
                self._process.startPolling()
            except Exception:
                self._process = None
                self._setBusy(False)
                raise

    def _onEstimateFinished(self, returnCode: int, t1Node, tables) -> None:
        from CondNetSlicerLib.process import CANCELLED

        import shutil

        process, self._process = self._process, None
        self._setBusy(False)
        try:
            if returnCode == CANCELLED:
                self._log("Conductivity estimation cancelled; nothing was added.")
                return
            if returnCode != 0:
                details = "\n".join(process.output[-15:]) if process is not None else ""
                slicer.util.errorDisplay(
                    _("Conductivity estimation failed (exit code {code}).").format(code=returnCode),
                    detailedText=details,
                )
                return
            if not slicer.mrmlScene.IsNodePresent(t1Node):  # e.g. the scene was closed meanwhile
                self._log(f"{t1Node.GetName()} was removed from the scene: the conductivity was not loaded.")
                return
            with slicer.util.tryWithErrorDisplay(_("Failed to load the conductivity."), waitCursor=True):
                result = self.logic.loadConductivityResults(process.outDir, t1Node, tables)
                # The panel may have been left (exit() drops self._parameterNode) while the process ran:
                # store the result in the module's parameter node itself, which the panel shows on entry.  A new
                # wrapper only then: each one keeps observers on the node.
                parameterNode = self._parameterNode or CondNetSlicerParameterNode(self.logic.getParameterNode())
                parameterNode.conductivityVolume = result["conductivity"][tables[0]]
                if tables[0] in result["uncertainty"]:
                    parameterNode.uncertaintyVolume = result["uncertainty"][tables[0]]
                self._log("Conductivity ready: " + ", ".join(n.GetName() for n in result["conductivity"].values()))
                self._startWarmup()
                if result["warnings"]:  # already in the log, as the process wrote them; too important to miss
                    slicer.util.warningDisplay(
                        "\n\n".join(result["warnings"]),
                        windowTitle=_("CondNet: check the inputs of this conductivity"),
                    )
        finally:
            # The folder holds copies of the patient's scans: do not leave them in the temporary folder.
            if process is not None:
                shutil.rmtree(process.workDir, ignore_errors=True)

    def _startWarmup(self) -> None:
        """Once per session, compile the E-field kernels in the background while the user places the coil (on a new
        installation the first E-field would otherwise wait about half a minute for them; later sessions load
        them from numba's cache in about a second)."""
        if self._warmup is not None:
            return
        try:
            self._warmup = self.logic.startWarmupProcess(
                logCallback=lambda line: self._log(f"E-field warm-up: {line}") if "ready" in line else None
            )
            self._warmup.startPolling()
        except Exception as err:  # noqa: BLE001 - only a head start: never in the way of the results
            self._log(f"E-field warm-up did not start ({err}); the first E-field compiles its kernels itself.")

    def onShowUncertaintyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the uncertainty."), waitCursor=True):
            self.logic.showOverlay(self._parameterNode.t1Volume, self._parameterNode.uncertaintyVolume)

    # ------------------------------------------------------------------------------- coil
    def _ensureCoilMarkup(self):
        """The selected coil markup if CondNet made it, else a new one (a user's point list is never reused)."""
        p = self._parameterNode
        markup = self.logic.coilMarkupForPlacing(p.coilMarkup)
        if markup is not p.coilMarkup:
            p.coilMarkup = markup
        return markup

    def onPlaceCoilButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start placing the coil."), waitCursor=True):
            markup = self._ensureCoilMarkup()
            self.logic.startCoilPlacement(markup, slicer.modules.markups.logic())  # PointRemovedEvent: coil hidden
            self._log("Click on the head in a slice or 3D view to place the coil.")

    def _observeCoilMarkup(self, markup) -> None:
        if markup is self._observedMarkup:
            return
        # The angle the panel applied belongs to the markup observed so far: for another coil markup (chosen
        # in the selector, a new one, or the same one after the panel was left) the coil's own angle is shown.
        self._appliedHandleAngle = None
        events = (
            (slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self._onCoilMarkupMoved),
            (slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self._onCoilMarkupMoved),
            (slicer.vtkMRMLMarkupsNode.PointRemovedEvent, self._onCoilPointRemoved),
            (slicer.vtkMRMLMarkupsNode.PointPositionUndefinedEvent, self._onCoilPointRemoved),
        )
        if self._observedMarkup is not None:
            for event, handler in events:
                self.removeObserver(self._observedMarkup, event, handler)
        self._observedMarkup = markup
        if markup is not None:
            for event, handler in events:
                self.addObserver(markup, event, handler)

    def _observeTarget(self, markup) -> None:
        """Follow the target point list's points: the target buttons need one."""
        if markup is self._observedTarget:
            return
        events = (slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
                  slicer.vtkMRMLMarkupsNode.PointPositionUndefinedEvent)
        if self._observedTarget is not None:
            for event in events:
                self.removeObserver(self._observedTarget, event, self._onParameterNodeModified)
        self._observedTarget = markup
        if markup is not None:
            for event in events:
                self.addObserver(markup, event, self._onParameterNodeModified)

    def _onCoilPointRemoved(self, caller=None, event=None) -> None:
        """The coil's point is gone (Place coil pressed again, deleted elsewhere) or its position cleared (Markups
        module): hide the coil, update buttons."""
        p = self._parameterNode
        if p is None:
            return
        self.logic.setCoilModelVisible(p.coilModel, False)
        self._onParameterNodeModified()

    def _onCoilMarkupMoved(self, caller=None, event=None) -> None:
        """After a click or a drag: snap to the scalp, redraw the coil, and re-solve when asked to."""
        p = self._parameterNode
        if self._busy:
            self._coilMovedWhileBusy = True  # handled when the work ends (_setBusy)
            return
        if self._updatingCoil or p is None or not p.conductivityVolume:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to place the coil on the scalp."), waitCursor=True):
            self._snapCoil()
        self._onParameterNodeModified()
        # Not inside the block above: onComputeEFieldButton shows its own error, and tryWithErrorDisplay re-raises,
        # so a nested call would show a failed solve twice.
        if p.autoUpdate and p.eMagnitudeVolume and self.ui.computeEFieldButton.enabled:
            self.onComputeEFieldButton()

    def _snapCoil(self) -> None:
        p = self._parameterNode
        self._updatingCoil = True
        try:
            freshlyPlaced = not self.logic.coilMarkupHasOrientation(p.coilMarkup)
            self.logic.snapCoilMarkup(p.coilMarkup, p.conductivityVolume)
            if freshlyPlaced:  # a new point has no orientation yet: turn it to the panel's handle angle
                self.logic.setCoilHandleAngle(p.coilMarkup, p.conductivityVolume, p.handleAngleDeg)
            angle = round(self.logic.coilHandleAngle(p.coilMarkup, p.conductivityVolume), 6)
            self._appliedHandleAngle = angle
            p.handleAngleDeg = angle
            self._updateCoilModel()
        finally:
            self._updatingCoil = False

    def onSnapCoilButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to snap the coil to the scalp."), waitCursor=True):
            self._snapCoil()

    def _placeCoil(self, place, *, readAngle: bool = False):
        """Place the coil markup (made if needed) with ``place(markup)`` and redraw the coil; returns what ``place``
        returns.  ``place`` turns the coil to the panel's handle angle, or with ``readAngle`` the panel shows the
        placed coil's own angle.  The markup's snapping after a move is held off meanwhile."""
        p = self._parameterNode
        markup = self._ensureCoilMarkup()
        self._updatingCoil = True
        try:
            placed = place(markup)
            if readAngle:
                angle = round(self.logic.coilHandleAngle(markup, p.conductivityVolume), 6)
                self._appliedHandleAngle = angle
                p.handleAngleDeg = angle
            else:
                self._appliedHandleAngle = p.handleAngleDeg
            self._updateCoilModel()
        finally:
            self._updatingCoil = False
        return placed

    def onLoadPoseButton(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Coil pose"), _pathText(self._parameterNode.exportFolder),
            "Coil pose (*.txt *.csv *.json);;All files (*)",
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to place the coil at the saved pose."), waitCursor=True):
            p = self._parameterNode
            pose = self.logic.readCoilPose(path)  # a bad file changes nothing
            distance = self._placeCoil(
                lambda markup: self.logic.placeCoilAtPose(markup, p.conductivityVolume, pose,
                                                          scalpOffsetMm=p.scalpOffsetMm),
                readAngle=True,
            )
            self._log(f"Coil placed at the pose in {path} ({distance:.1f} mm from the scalp).")

    def onCoilOverTargetButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to place the coil over the target."), waitCursor=True):
            p = self._parameterNode
            target = self.logic.targetPoint(p.targetMarkup, p.conductivityVolume)
            distance = self._placeCoil(lambda markup: self.logic.placeCoilOverTarget(
                markup, p.conductivityVolume, target, handleAngleDeg=p.handleAngleDeg
            ))[1]
            self._log(f"Coil placed over the target: its scalp point is {distance:.1f} mm from the target.")

    def onPresetButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to place the coil at the EEG position."), waitCursor=True):
            p = self._parameterNode
            self._placeCoil(lambda markup: self.logic.placeCoilAtPreset(
                markup, p.landmarks, p.conductivityVolume, p.eegPosition, handleAngleDeg=p.handleAngleDeg
            ))
            self._log(f"Coil placed at {p.eegPosition}.")

    def onEegPositionsButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to find the EEG positions."), waitCursor=True):
            p = self._parameterNode
            p.eegPositionsMarkup = self.logic.showEegPositions(p.landmarks, p.conductivityVolume, p.eegPositionsMarkup)
            self._log(f"The 10-10 positions are shown as the point list {p.eegPositionsMarkup.GetName()}.")

    def _coilToRas(self):
        p = self._parameterNode
        return self.logic.coilToRas(p.coilMarkup, p.conductivityVolume, scalpOffsetMm=p.scalpOffsetMm)

    def _updateCoilModel(self) -> None:
        p = self._parameterNode
        if self.ui.coilComboBox.findText(p.coilName) < 0:
            # A coil that is not installed here (a scene from elsewhere; logged when it was chosen): the coil markup
            # still moves, but no coil is drawn until one in the list is chosen, which redraws it.
            self.logic.setCoilModelVisible(p.coilModel, False)
            return
        model, transform = self.logic.updateCoilModel(
            p.coilName, self._coilToRas(), p.conductivityVolume, p.coilModel, p.coilTransform
        )
        self._modelScalpOffset = p.scalpOffsetMm
        self._modelCoilName = p.coilName
        p.coilModel, p.coilTransform = model, transform

    # ------------------------------------------------------------------------------- E-field
    def onComputeEFieldButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("E-field computation failed."), waitCursor=True):
            p = self._parameterNode
            self._ensureRequirements()
            device = self._resolveDevice(p.device)
            pose = self._coilToRas()
            self._updateCoilModel()
            from CondNetLogic.errors import Cancelled

            self._setBusy(True, f"Computing the E-field ({p.coilName}, dI/dt = {p.didtAPerUs:g} A/us)...")
            try:
                result = self.logic.computeEField(
                    p.conductivityVolume,
                    p.coilName,
                    pose,
                    p.didtAPerUs * 1e6,
                    device=device,
                    labelNode=p.labelMap,
                    labelMapping=p.labelMapping,
                    uniformTable=_pathText(p.customTablePath) if p.conductivitySet == "custom" else "",
                    # Interactive use: precompute the coil's field once, then each move costs only the solve.
                    primaryField="grid" if p.autoUpdate else "auto",
                    warmStart=p.autoUpdate,  # dragging: start from the last potential
                    eVectorNode=p.eVectorVolume,
                    eMagnitudeNode=p.eMagnitudeVolume,
                    tableNode=p.statisticsTable,
                    targetRas=self.logic.targetPoint(p.targetMarkup, p.conductivityVolume),
                    targetRadiusMm=p.targetRadiusMm,
                    targetRegionNode=p.targetRegion,
                    progress=self._onProgress,
                    cancel=self._isCancelled,
                )
            except Cancelled:
                self._log("E-field computation cancelled; the results were left as they were.")
                return
            finally:
                self._setBusy(False)
            p.eMagnitudeVolume, p.eVectorVolume, p.statisticsTable = (
                result["eMagnitude"],
                result["eVector"],
                result["table"],
            )
            info = result["info"]
            self._log(
                f"E-field: {info.get('iterations')} iterations, residual {info.get('residual', 0):.2e}, "
                f"{info.get('timings', {}).get('total', 0):.1f} s on {info.get('device')}."
            )
            if result["warnings"]:
                slicer.util.warningDisplay("\n\n".join(result["warnings"]), windowTitle=_("CondNet: E-field"))

    def onEFieldSpreadButton(self) -> None:
        """Solve on each slicing direction's conductivity and show the sd of |E| across the networks."""
        with slicer.util.tryWithErrorDisplay(_("Computing the E-field spread failed."), waitCursor=True):
            p = self._parameterNode
            self._ensureRequirements()
            device = self._resolveDevice(p.device)
            from CondNetLogic.errors import Cancelled

            self._setBusy(True, f"Solving the E-field on each network's conductivity ({p.coilName})...")
            try:
                result = self.logic.computeEFieldSpread(
                    p.conductivityVolume,
                    p.coilName,
                    self._coilToRas(),
                    p.didtAPerUs * 1e6,
                    device=device,
                    targetRas=self.logic.targetPoint(p.targetMarkup, p.conductivityVolume),
                    targetRadiusMm=p.targetRadiusMm,
                    targetRegionNode=p.targetRegion,
                    spreadNode=p.eFieldSpreadVolume,
                    tableNode=p.eFieldSpreadTable,
                    progress=self._onProgress,
                    cancel=self._isCancelled,
                )
            except Cancelled:
                self._log("E-field spread cancelled; the results were left as they were.")
                return
            finally:
                self._setBusy(False)
            p.eFieldSpreadVolume, p.eFieldSpreadTable = result["spread"], result["table"]
            if result["warnings"]:
                slicer.util.warningDisplay("\n\n".join(result["warnings"]), windowTitle=_("CondNet: E-field spread"))

    def onBestPoseButton(self) -> None:
        """Try handle angles (and scalp centres within the search radius), move the coil to the strongest pose at the
        target and show its field."""
        found = None
        with slicer.util.tryWithErrorDisplay(_("Finding the best coil pose failed."), waitCursor=True):
            p = self._parameterNode
            self._ensureRequirements()
            device = self._resolveDevice(p.device)
            from CondNetLogic.errors import Cancelled

            self._setBusy(True, f"Trying coil poses at the target ({p.coilName})...")
            try:
                found = self.logic.strongestPose(
                    p.conductivityVolume,
                    p.coilName,
                    self._coilToRas(),
                    p.didtAPerUs * 1e6,
                    self.logic.targetPoint(p.targetMarkup, p.conductivityVolume),
                    targetRadiusMm=p.targetRadiusMm,
                    targetRegionNode=p.targetRegion,
                    searchRadiusMm=p.searchRadiusMm,
                    scalpOffsetMm=p.scalpOffsetMm,
                    device=device,
                    progress=self._onProgress,
                    cancel=self._isCancelled,
                )
            except Cancelled:
                self._log("Trying coil poses cancelled; the coil was left as it was.")
                return
            finally:
                self._setBusy(False)
            best = found["coilToRas"]
            self._placeCoil(lambda markup: self.logic.placeCoilAtPose(markup, p.conductivityVolume, best,
                                                                      scalpOffsetMm=p.scalpOffsetMm), readAngle=True)
            self._log(f"Coil moved to the strongest pose at the target (handle angle {p.handleAngleDeg:g} deg).")
        if found is not None:
            self.onComputeEFieldButton()  # the field of that pose, in the E-field nodes

    def onMotorThresholdButton(self) -> None:
        """Keep the shown E-field's target field as the motor threshold's (the solve was at the measured threshold,
        the coil on the hotspot, the target on the hand knob): later targets get their motor-equivalent dose."""
        with slicer.util.tryWithErrorDisplay(_("Setting the motor threshold failed."), waitCursor=True):
            p = self._parameterNode
            field = self.logic.targetField(p.eMagnitudeVolume)
            if field is None:
                raise ValueError("compute the E-field with a target point (the hand knob) first")
            p.motorThreshold = json.dumps(dataclasses.asdict(field))
            self._log(f"Motor threshold set: mean |E| {field.e_v_per_m:.1f} V/m within {field.region} at dI/dt "
                      f"{abs(field.didt) / 1e6:.4g} A/us; set the measured threshold in the Motor threshold box.")
            if field.didt_max is not None:  # the threshold is this solve's output until the user says otherwise
                percent = round(100.0 * abs(field.didt) / field.didt_max, 1)
                if 1.0 <= percent <= 100.0:
                    p.motorThresholdPercent = percent
                else:  # a solve beyond what the stimulator gives: no output in the box would be true
                    self._log(f"The solve ran at {percent:g} % of the coil's maximum output, which no stimulator "
                              f"output gives: the Motor threshold box keeps {p.motorThresholdPercent:g} %.")

    # ------------------------------------------------------------------------------- export
    def onExportButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            p = self._parameterNode
            nodes = {
                "efield_magnitude": p.eMagnitudeVolume,
                "efield_vector": p.eVectorVolume,
                "efield_statistics": p.statisticsTable,
                "uncertainty": p.uncertaintyVolume,
                "efield_magnitude_sd": p.eFieldSpreadVolume,
                "efield_spread_statistics": p.eFieldSpreadTable,
            }
            if p.conductivityVolume:
                table = p.conductivityVolume.GetAttribute("CondNet.Table") or "custom"
                nodes[f"conductivity_{table}"] = p.conductivityVolume
            # The pose the E-field was solved with, not the coil markup's, which may have moved since.
            solved = self.logic.solvedCoilToRas(p.eMagnitudeVolume or p.eVectorVolume)
            current = None
            if p.conductivityVolume and p.coilMarkup and p.coilMarkup.GetNumberOfControlPoints():
                current = self._coilToRas()
            pose = solved if solved is not None else current
            if solved is not None and current is not None and not self.logic.samePose(solved, current):
                self._log("The coil has moved since the E-field was computed: exporting the pose of the E-field.")
            folder = _pathText(p.exportFolder)
            dosing = self.logic.doseRecord(p.motorThreshold, p.eMagnitudeVolume, p.dosePercent, p.motorThresholdPercent)
            options = {"coilToRas": pose, "extension": p.exportFormat,
                       "metadata": {"e_field_dosing": dosing} if dosing else None}
            try:
                written = self.logic.exportResults(folder, nodes, **options)
            except FileExistsError as err:
                if not slicer.util.confirmYesNoDisplay(f"{err}\n\nReplace them?"):
                    self._log("Export cancelled: no file was changed.")
                    return
                written = self.logic.exportResults(folder, nodes, overwrite=True, **options)
            self._log("Exported: " + ", ".join(str(path) for path in written))


#
# CondNetSlicerTest
#


class CondNetSlicerTest(ScriptedLoadableModuleTest):
    """Runs the whole workflow on the sample head; the checks are shared with the pytest suite."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_CondNetSlicerWorkflow()

    def test_CondNetSlicerWorkflow(self):
        import SampleData

        from CondNetLogic.weights import read_manifest
        from CondNetSlicerLib import install, testing
        from CondNetSlicerLib.logic import CondNetSlicerLogic

        install.ensureRequirements(resourcePath("requirements.txt"), interactive=False)
        self.delayDisplay("Loading the MNI152 sample head")
        registerSampleData()
        # downloadSample returns only the first node of a sample; downloadSamples returns all of them.
        t1Node, t2Node = SampleData.downloadSamples("CondNetMNI152")
        workDir = tempfile.mkdtemp(prefix="CondNetTest-")
        weightsPath = ""
        if read_manifest().get("default") is None:
            # No trained weights shipped in this build: check the plumbing with untrained ones.
            weightsPath = testing.makeTinyWeights(os.path.join(workDir, "tiny.safetensors"), size=256, tables=("A",))
        self.delayDisplay("Running conductivity, coil placement, E-field and export")
        testing.runWorkflow(
            CondNetSlicerLogic(),
            t1Node,
            t2Node,
            os.path.join(workDir, "export"),
            lambda condition, message: self.assertTrue(condition, message),  # noqa: PT009 (unittest in Slicer)
            weightsPath=weightsPath,
            tables=("A",),
            device="auto",
        )
        self.delayDisplay("Test passed")
