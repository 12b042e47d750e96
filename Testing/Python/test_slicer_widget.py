"""The Slicer panel itself (CondNetSlicerWidget) on fake Qt widgets: setup, Estimate in the background process, coil
placement, E-field, the panel's fixes, export, leave/enter, closing the scene, cleanup.

The scenario runs in a subprocess (slicer_gui_fakes/panel_scenario.py): the fakes replace ``qt``/``ctk`` and add
``slicer.app``, ``slicer.ScriptedLoadableModule`` and a ``slicer.parameterNodeWrapper`` stand-in for the whole
interpreter, which must not leak into the other tests.  It prints one line per step and, on failure, the step
that failed and why.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("torch")

SCENARIO = Path(__file__).resolve().parent / "slicer_gui_fakes" / "panel_scenario.py"


def test_panel_scenario_on_fake_qt(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # Every file goes under tmp_path: the scenario writes to WORKDIR and points TMPDIR there for the panel's work
    # folders.  CONDNET_CACHE_DIR is conftest.py's private cache (inherited); numba keeps its default on-disk
    # cache, as in the other tests (warm: about 17 s here; with an empty numba cache about 55 s).
    env = {**os.environ, "TMPDIR": str(work), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(SCENARIO), str(work)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + ("\n---- stderr ----\n" + done.stderr[-4000:] if done.stderr.strip() else "")
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED step")]
    assert done.returncode == 0, (failed[0] if failed else f"exit code {done.returncode}") + "\n" + output[-12000:]
    assert "PANEL SCENARIO PASSED" in done.stdout, output
