"""The background-process runner and the GUI's conductivity path (``condnet predict`` in a subprocess)."""

import json
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from CondNetLogic.errors import WeightsError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "CondNetSlicer"))

from CondNetSlicerLib.process import CANCELLED, PACKAGE_PARENT, BackgroundProcess, childEnvironment  # noqa: E402

PY = sys.executable


def test_output_progress_and_return_code_are_reported():
    lines, progress, done = [], [], []
    script = (
        "import sys\nfor p in (10, 55.5, 100):\n    print(f'step {p}%', flush=True)\n"
        "sys.stderr.write('bar 75%\\r')\nsys.exit(3)"
    )
    process = BackgroundProcess(
        [PY, "-c", script],
        logCallback=lines.append,
        progressCallback=lambda f, m: progress.append(f),
        completedCallback=done.append,
    )
    assert process.start().waitForCompletion(timeout=60) == 3
    assert lines[:3] == ["step 10%", "step 55.5%", "step 100%"]
    assert "bar 75%" in lines
    assert progress[:3] == [0.10, 0.555, 1.0]
    assert 0.75 in progress
    assert done == [3]
    assert not process.isRunning()
    assert process.poll() == 3
    assert done == [3]


def test_cancel_kills_the_process_tree(tmp_path):
    marker = tmp_path / "child_alive"
    child = f"import time, pathlib\ntime.sleep(3)\npathlib.Path({str(marker)!r}).write_text('x')"
    script = (
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "print('started', flush=True)\ntime.sleep(60)"
    )
    done = []
    process = BackgroundProcess([PY, "-c", script], completedCallback=done.append).start()
    deadline = time.monotonic() + 30
    while "started" not in process.output and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.05)
    started = time.monotonic()
    process.cancel()
    assert process.returnCode == CANCELLED
    assert done == [CANCELLED]
    assert time.monotonic() - started < 10
    time.sleep(4)
    assert not marker.exists(), "the child process survived the cancel"


def test_start_twice_and_poll_before_start_raise():
    process = BackgroundProcess([PY, "-c", "pass"])
    with pytest.raises(RuntimeError, match="not started"):
        process.poll()
    process.start()
    with pytest.raises(RuntimeError, match="already"):
        process.start()
    assert process.waitForCompletion(timeout=60) == 0


def test_timeout_cancels():
    process = BackgroundProcess([PY, "-c", "import time; time.sleep(30)"]).start()
    with pytest.raises(TimeoutError):
        process.waitForCompletion(timeout=0.5)
    assert process.returnCode == CANCELLED


def test_carriage_returns_split_lines_and_the_last_unterminated_line_is_kept():
    lines, progress = [], []
    script = "import sys\nsys.stdout.write('a 10%\\rb 20%\\nlast 250%')"
    process = BackgroundProcess([PY, "-c", script], logCallback=lines.append,
                                progressCallback=lambda f, m: progress.append(f)).start()
    assert process.waitForCompletion(timeout=60) == 0
    assert lines == ["a 10%", "b 20%", "last 250%"]
    assert progress == [0.1, 0.2, 1.0]  # clamped to [0, 1]


def test_cancel_after_the_end_keeps_the_return_code():
    done = []
    process = BackgroundProcess([PY, "-c", "pass"], completedCallback=done.append).start()
    assert process.waitForCompletion(timeout=60) == 0
    process.cancel()
    assert (process.returnCode, process.poll(), done) == (0, 0, [0])


class _SlowQueue(queue.Queue):
    """The reader thread delivers each line late, as when the GUI is busy."""

    def put(self, item, *args, **kwargs):
        time.sleep(0.01)
        super().put(item, *args, **kwargs)


def test_completion_is_reported_after_all_the_output():
    seen = []
    process = BackgroundProcess([PY, "-c", "for i in range(40): print(f'line {i}')"])
    process.completedCallback = lambda code: seen.append(len(process.output))
    process._queue = _SlowQueue()
    process.start()
    process._proc.wait()  # the process has exited; its output is still on its way
    assert process.waitForCompletion(timeout=60) == 0
    assert seen == [40]


def test_child_environment_imports_this_package_first(monkeypatch):
    assert (PACKAGE_PARENT / "CondNetLogic" / "__init__.py").is_file()
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    env = childEnvironment()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PACKAGE_PARENT), "elsewhere"]
    assert env["PYTHONUNBUFFERED"] == "1"
    monkeypatch.delenv("PYTHONPATH")
    assert childEnvironment()["PYTHONPATH"] == str(PACKAGE_PARENT)


@pytest.fixture
def logic_and_head(mrml_scene, tmp_path):
    pytest.importorskip("torch")
    from test_slicer_logic import OBLIQUE, relabel

    from CondNetLogic.phantom import make_head_phantom
    from CondNetLogic.volume import Volume
    from CondNetSlicerLib import adapters, testing
    from CondNetSlicerLib.logic import CondNetSlicerLogic

    phantom = make_head_phantom((48, 48, 48), seed=1, spacing_mm=1.25)

    def lia(volume):
        out = relabel(volume, (0, 2, 1), (True, True, False))
        return Volume(out.array, OBLIQUE @ out.ijk_to_ras)

    t1 = adapters.addVolumeNode(mrml_scene, lia(phantom.t1), "T1")
    t2 = adapters.addVolumeNode(mrml_scene, lia(phantom.t2), "T2")
    weights = testing.makeTinyWeights(str(tmp_path / "tiny.safetensors"), size=64)
    return CondNetSlicerLogic(mrml_scene), t1, t2, weights


def test_conductivity_in_a_background_process_matches_the_in_process_result(logic_and_head, tmp_path):
    from CondNetSlicerLib import adapters, testing

    logic, t1, t2, weights = logic_and_head
    scene = logic.scene
    progress = []
    process = logic.startConductivityProcess(
        t1,
        t2,
        weightsPath=weights,
        device="cpu",
        precision="float32",  # reduced precision rounds differently with other thread counts
        workDir=str(tmp_path / "work"),
        progressCallback=lambda f, m: progress.append(f),
        keepDirections=True,
    )
    assert process.waitForCompletion(timeout=300) == 0, "\n".join(process.output)
    assert progress
    assert max(progress) == 1.0
    before = scene.GetNumberOfNodes()
    result = logic.loadConductivityResults(process.outDir, t1, ("A", "B"))
    sigma = result["conductivity"]["A"]
    assert testing.sameGeometry(sigma, t1, atol=1e-9)
    inProcess = logic.estimateConductivity(t1, t2, tables=("A", "B"), weightsPath=weights, device="cpu",
                                           precision="float32", keepDirections=True)
    sidecar = json.loads((Path(process.outDir) / "sigma.json").read_text())
    assert sidecar["precision"] == "float32"
    for name in ("A", "B"):
        np.testing.assert_allclose(
            adapters.volumeFromNode(result["conductivity"][name]).array,
            adapters.volumeFromNode(inProcess["conductivity"][name]).array,
            atol=1e-5,
        )
        # each slicing direction's own conductivity came through the files too, on the T1 grid
        loaded = logic.directionNodes(result["conductivity"][name])
        assert sorted(loaded) == ["axial", "coronal", "sagittal"]
        assert loaded == result["directions"][name]
        for direction, node in loaded.items():
            assert testing.sameGeometry(node, t1, atol=1e-9)
            np.testing.assert_allclose(adapters.volumeFromNode(node).array,
                                       adapters.volumeFromNode(inProcess["directions"][name][direction]).array,
                                       atol=1e-5)
    assert scene.GetNumberOfNodes() > before


def test_background_run_for_one_table_asks_condnet_predict_for_it(logic_and_head, tmp_path, monkeypatch):
    logic, t1, t2, weights = logic_and_head
    monkeypatch.setattr(BackgroundProcess, "start", lambda self: self)  # the command line is what is checked
    one = logic.startConductivityProcess(t1, t2, weightsPath=weights, tables=("B",), workDir=str(tmp_path / "b"))
    assert one.command[-2:] == ["--table", "B"]
    assert "--save-directions" not in one.command
    kept = logic.startConductivityProcess(t1, t2, weightsPath=weights, tables=("B",), workDir=str(tmp_path / "d"),
                                          keepDirections=True)
    assert kept.command[-3:] == ["--table", "B", "--save-directions"]
    both = logic.startConductivityProcess(t1, t2, weightsPath=weights, tables=("A", "B"), workDir=str(tmp_path / "ab"))
    assert "--table" not in both.command
    with pytest.raises(WeightsError, match="predict table A, B, not C"):
        logic.startConductivityProcess(t1, t2, weightsPath=weights, tables=("C",), workDir=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_failed_background_run_leaves_the_scene_unchanged(logic_and_head, tmp_path):
    logic, t1, t2, weights = logic_and_head
    scene = logic.scene
    before = scene.GetNumberOfNodes()
    process = logic.startConductivityProcess(t1, None, weightsPath=weights, device="cpu", workDir=str(tmp_path / "w"))
    assert process.waitForCompletion(timeout=300) != 0
    assert any("T2" in line for line in process.output)
    with pytest.raises(OSError, match="sigma.json"):
        logic.loadConductivityResults(process.outDir, t1)
    assert scene.GetNumberOfNodes() == before


def test_background_run_refuses_t2_under_another_transform(logic_and_head, tmp_path):
    from CondNetSlicerLib import adapters

    logic, t1, t2, weights = logic_and_head
    transform = logic.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = [5.0, 0.0, 0.0]
    transform.SetMatrixTransformToParent(adapters.vtkMatrixFromArray(matrix))
    t2.SetAndObserveTransformNodeID(transform.GetID())
    before = logic.scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="harden"):
        logic.startConductivityProcess(t1, t2, weightsPath=weights, workDir=str(tmp_path / "w"))
    assert logic.scene.GetNumberOfNodes() == before
    assert not (tmp_path / "w").exists()  # nothing was written
    with pytest.raises(ValueError, match="not C"):
        logic.startConductivityProcess(t1, None, weightsPath=weights, tables=("C",), workDir=str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_background_run_refuses_nan_voxels_naming_the_node(logic_and_head, tmp_path):
    import slicer

    logic, t1, t2, weights = logic_and_head
    array = slicer.util.arrayFromVolume(t2).astype(np.float32)
    array[0, 0, 0] = np.nan
    nan_t2 = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2 with a NaN")
    nan_t2.CopyOrientation(t2)
    slicer.util.updateVolumeFromArray(nan_t2, array)
    with pytest.raises(ValueError, match=r"T2 \(T2 with a NaN\): 1 of .* voxels are NaN"):
        logic.startConductivityProcess(t1, nan_t2, weightsPath=weights, workDir=str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_warmup_in_a_background_process(mrml_scene):
    from CondNetSlicerLib.logic import CondNetSlicerLogic

    logic = CondNetSlicerLogic(mrml_scene)
    assert logic.warmupCommand()[-3:] == ["-m", "CondNetLogic", "warmup"]
    lines = []
    process = logic.startWarmupProcess(logCallback=lines.append)
    assert process.waitForCompletion(timeout=600) == 0, "\n".join(process.output)
    assert any(line.startswith("E-field kernels ready in") for line in lines)


def test_log_records_of_a_background_run_reach_the_log_as_lines_of_their_own(logic_and_head, tmp_path):
    # The panel's log drops progress-bar redraws (lines with "%|"), so a log record written onto the bar's line
    # was lost with it: the preprocessing steps always were, and so was any warning issued right after a redraw.
    import slicer

    logic, t1, t2, weights = logic_and_head
    moved = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2 of another session")
    moved.CopyOrientation(t2)
    moved.SetOrigin(*(np.array(t2.GetOrigin()) + [10.0, 0.0, 0.0]))  # the head 10 mm right of the T1's
    slicer.util.updateVolumeFromArray(moved, slicer.util.arrayFromVolume(t2))
    lines = []
    process = logic.startConductivityProcess(t1, moved, weightsPath=weights, device="cpu", precision="float32",
                                             workDir=str(tmp_path / "work"), logCallback=lines.append)
    assert process.waitForCompletion(timeout=300) == 0, "\n".join(process.output)
    records = [line for line in lines if "CondNetLogic." in line]
    assert any("preprocessing: checking the inputs" in line for line in records)
    assert any("the scans look misregistered" in line for line in records)
    glued = [line for line in records if not line.startswith(("INFO ", "WARNING "))]
    assert not glued, "\n".join(glued)
    sidecar = json.loads((Path(process.outDir) / "sigma.json").read_text())
    np.testing.assert_allclose(sidecar["t2_head_offset_mm"], [10.0, 0.0, 0.0], atol=1.0)  # RAS mm


def test_percentages_in_log_lines_do_not_move_the_progress_bar():
    """A warning that quotes a percentage (inside-out check, T2 coverage) is not progress."""
    script = (
        "import sys\n"
        "sys.stdout.write('predict:  90%|#########  | 90% axial network: 60/64 slices\\r'); sys.stdout.flush()\n"
        "print('\\nWARNING CondNetLogic.inference: the conductivity looks inside out (depth ratio 1.40, 12% of it "
        "within 15 mm of the scalp)')\n"
        "sys.stdout.write('predict: 100%|##########| 100% conductivity ready\\r'); sys.stdout.flush()\n"
    )
    fractions = []
    process = BackgroundProcess([sys.executable, "-c", script], progressCallback=lambda f, m: fractions.append(f))
    assert process.start().waitForCompletion(timeout=60) == 0
    assert fractions == [0.9, 1.0], f"the progress went {fractions}"
