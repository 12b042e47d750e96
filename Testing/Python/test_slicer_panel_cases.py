"""Single cases of the Slicer panel (CondNetSlicerWidget) on fake Qt widgets, each in a fresh interpreter as in
test_slicer_widget.py: a panel with a phantom conductivity (no CNN run) and a placed coil, then one case."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]

# Panel with a phantom conductivity (no CNN run) and a placed coil; a second coil file in the user coil folder.
PRELUDE = r'''
import os, sys, tempfile
from pathlib import Path
ROOT = Path(sys.argv[1]); WORK = Path(sys.argv[2])
sys.path[:0] = [str(ROOT / "Testing" / "Python"), str(ROOT / "CondNetSlicer"), str(ROOT)]
os.environ["TMPDIR"] = tempfile.tempdir = str(WORK)
(WORK / "coils").mkdir()
os.environ["CONDNET_COIL_DIR"] = str(WORK / "coils")
(WORK / "coils" / "aaa_dropped.ccd").write_text("# dropped;dIdtmax=150\n1\n0 0 -0.01 0 0 1e-4\n")
from slicer_gui_fakes import fakeqt, fakeslicer
slicer = fakeslicer.install()
import numpy as np
from CondNetLogic.phantom import make_head_phantom
from CondNetSlicerLib import adapters
from CondNetSlicerLib.logic import ROLE
RECORD = fakeslicer.RECORD
scene, keep = fakeslicer.makeScene()
import CondNetSlicer as module
phantom = make_head_phantom((48, 48, 48), seed=1, spacing_mm=1.25)
t1 = adapters.addVolumeNode(scene, phantom.t1, "T1")
t2 = adapters.addVolumeNode(scene, phantom.t2, "T2")
sigma = adapters.addVolumeNode(scene, phantom.tissues.with_array(
    np.where(phantom.tissues.array > 0, 0.3, 0.0).astype(np.float32)), "sigma")
sigma.SetAttribute(ROLE, "conductivity")
parent = fakeqt.qMRMLWidget(); parent.setLayout(fakeqt.QVBoxLayout()); parent.isEntered = True
w = module.CondNetSlicerWidget(parent); w.setup(); w.enter()
p, ui = w._parameterNode, w.ui
p.conductivityVolume = sigma
centre = (adapters.ijkToRasFromNode(sigma) @ np.append(np.argwhere(phantom.tissues.array > 0).mean(0), 1.0))[:3]
ui.placeCoilButton.click()
markup = p.coilMarkup
markup.AddControlPointWorld(*(centre + [10.0, 0.0, 60.0]), "coil")
markup.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent)
assert w.logic.coilMarkupHasOrientation(markup)
'''


def _runPanel(tmp_path, body):
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "panel.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(script), str(ROOT), str(work)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_coil_chosen_during_a_solve_is_drawn_when_the_solve_ends(tmp_path):
    _runPanel(tmp_path, '''
        from CondNetLogic.errors import Cancelled
        assert p.coilModel.GetAttribute("CondNet.Coil") == "aaa_dropped"

        def solve(*args, progress=None, cancel=None, **kwargs):
            progress(0.5, "solving")  # the event loop runs: the user picks another coil meanwhile
            raise Cancelled("cancelled")

        w.logic.computeEField, w._ensureRequirements = solve, lambda: None
        RECORD["processEventsHooks"].append(lambda: ui.coilComboBox.setCurrentText("figure8_70mm"))
        ui.computeEFieldButton.click()
        RECORD["processEventsHooks"].clear()
        fakeqt.pumpTimers(force=True)
        assert p.coilName == "figure8_70mm"
        assert p.coilModel.GetAttribute("CondNet.Coil") == "figure8_70mm", "the coil model shows the old coil"
    ''')


def test_target_buttons_need_a_placed_target_point(tmp_path):
    _runPanel(tmp_path, '''
        target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "target")
        target.AddControlPointWorld(*centre, "T")
        ui.targetSelector.setCurrentNode(target)
        assert ui.coilOverTargetButton.enabled
        target.UnsetNthControlPointPosition(0)  # Markups module: 'Clear position'
        assert w.logic.targetPoint(target, p.conductivityVolume) is None
        assert not ui.coilOverTargetButton.enabled, "enabled for a target list without a placed point"
        assert not ui.bestPoseButton.enabled, "enabled for a target list without a placed point"
    ''')


def test_auto_update_does_not_solve_when_compute_is_disabled(tmp_path):
    _runPanel(tmp_path, '''
        emag = adapters.addVolumeNode(slicer.mrmlScene, phantom.t1, "E-field magnitude")
        emag.SetAttribute(ROLE, "efield-magnitude")
        p.eMagnitudeVolume = emag
        ui.autoUpdateCheckBox.checked = True
        p.coilName = "coil_from_elsewhere"  # a scene saved where other coils are installed
        assert not ui.computeEFieldButton.enabled
        w._ensureRequirements = lambda: None
        calls = []
        w.logic.computeEField = lambda *a, **k: calls.append(a[1])
        position = np.zeros(3)
        markup.GetNthControlPointPositionWorld(0, position)
        markup.SetNthControlPointPositionWorld(0, *(position + [3.0, 0.0, 0.0]))
        markup.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)
        assert calls == [], f"Auto update solved with {calls} although Compute E-field is disabled"
        assert not [d for d in RECORD["dialogs"] if d[0] == "error"], RECORD["dialogs"]
    ''')


def test_deleting_the_t1_never_makes_a_condnet_output_the_t1(tmp_path):
    _runPanel(tmp_path, '''
        slicer.mrmlScene.RemoveNode(t1)
        assert p.t1Volume is None or not p.t1Volume.GetAttribute(ROLE), \\
            f"the T1 became {p.t1Volume.GetName()}, a CondNet {p.t1Volume.GetAttribute(ROLE)} output"
    ''')


def test_clearing_the_coil_points_position_hides_the_coil_and_disables_the_solve(tmp_path):
    _runPanel(tmp_path, '''
        assert ui.computeEFieldButton.enabled
        markup.UnsetNthControlPointPosition(0)  # Markups module: 'Clear position'
        assert not ui.computeEFieldButton.enabled, "Compute E-field enabled for a coil point without a position"
        assert not ui.snapCoilButton.enabled
        assert not p.coilModel.GetDisplayNode().GetVisibility(), "the coil is still shown"
        p.handleAngleDeg = 45.0  # a parameter change must not try to turn a coil that has no position
        assert not [d for d in RECORD["dialogs"] if d[0] == "error"], RECORD["dialogs"]
    ''')

