"""Run a command (our CLI) in a background process with Slicer's Python, without freezing the GUI.

The process's output is read by a thread into a queue; :meth:`BackgroundProcess.poll` drains it on the
caller's thread (the Widget calls it from a ``QTimer``; tests call :meth:`waitForCompletion`), passes
each line to ``logCallback``, turns percentages into ``progressCallback(fraction, message)`` calls and
reports the exit.  :meth:`cancel` kills the whole process tree (the launcher and its children).
"""

import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

__all__ = ["CANCELLED", "BackgroundProcess", "childEnvironment", "pythonExecutable", "pythonCommand"]

#: Return code reported after :meth:`BackgroundProcess.cancel`.
CANCELLED = -1001

#: "42%", "42.5 %": the CLI's progress, as its tqdm bars show it.
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s?%")
#: A log record of the CLI ("WARNING name: ..."): its percentages are not progress.
_LOG_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

#: Folder that holds the ``CondNetLogic`` package: the repository root in a source tree, the
#: ``lib/Slicer-X.Y`` folder of an installed extension (see ``CondNetSlicer/CMakeLists.txt``).
PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


def pythonExecutable() -> str:
    """Slicer's Python (``PythonSlicer``, which sets up Slicer's environment) or this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def pythonCommand(*args: str) -> List[str]:
    """``[python, "-m", "CondNetLogic", *args]``: the package CLI with Slicer's Python."""
    return [pythonExecutable(), "-m", "CondNetLogic", *[str(a) for a in args]]


def childEnvironment() -> dict:
    """The environment of a child Python: Slicer's startup environment, with this package importable."""
    try:
        import slicer

        env = dict(slicer.util.startupEnvironment()) if hasattr(slicer, "app") else dict(os.environ)
    except Exception:  # startupEnvironment needs the application; a bare scene has none
        env = dict(os.environ)
    existing = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT)] + ([existing] if existing else []))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BackgroundProcess:
    """One command run in the background; see the module docstring.

    Parameters
    ----------
    command : sequence of str
        Program and arguments (no shell).
    logCallback : callable(str), optional
        Receives each output line (stdout and stderr merged).
    progressCallback : callable(float, str), optional
        Receives ``(fraction in [0, 1], line)`` for lines that show a percentage.
    completedCallback : callable(int), optional
        Called once with the return code (:data:`CANCELLED` after :meth:`cancel`).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        logCallback: Optional[Callable[[str], None]] = None,
        progressCallback: Optional[Callable[[float, str], None]] = None,
        completedCallback: Optional[Callable[[int], None]] = None,
        cwd: Optional[str] = None,
    ):
        self.command = [str(c) for c in command]
        self.logCallback = logCallback
        self.progressCallback = progressCallback
        self.completedCallback = completedCallback
        self.cwd = cwd
        self.returnCode: Optional[int] = None
        self.output: List[str] = []
        self._proc = None
        self._queue: queue.Queue = queue.Queue()
        self._reader = None
        self._timer = None
        self._completedReported = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "BackgroundProcess":
        """Launch the process and the output-reader thread."""
        if self._proc is not None:
            raise RuntimeError("the process was already started")
        logging.info("CondNet: running %s", " ".join(self.command))
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group, so cancel() reaches the children
        self._proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=childEnvironment(),
            cwd=self.cwd,
            universal_newlines=True,
            encoding="utf-8",
            errors="replace",
            **kwargs,
        )
        self._reader = threading.Thread(target=self._readOutput, daemon=True)
        self._reader.start()
        return self

    def _readOutput(self) -> None:
        stream = self._proc.stdout
        # tqdm redraws with "\r": split on it too so progress arrives while a bar is running.
        buffer = ""
        while True:
            chunk = stream.read(1)
            if not chunk:
                break
            if chunk in "\r\n":
                if buffer.strip():
                    self._queue.put(buffer.rstrip())
                buffer = ""
            else:
                buffer += chunk
        if buffer.strip():
            self._queue.put(buffer.rstrip())
        self._proc.wait()
        self._queue.put(None)  # end marker

    def isRunning(self) -> bool:
        """True until the process has exited and all its output has been polled."""
        return self._proc is not None and not self._completedReported

    def poll(self) -> Optional[int]:
        """Handle the output received so far; return the return code once finished, else ``None``."""
        if self._proc is None:
            raise RuntimeError("the process was not started")
        finished = False
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                finished = True
                break
            self._handleLine(line)
        if finished and self.returnCode is None:
            self.returnCode = int(self._proc.returncode)
        if self.returnCode is None:
            return None
        self._reportCompleted()
        return self.returnCode

    def _handleLine(self, line: str) -> None:
        self.output.append(line)
        if self.logCallback:
            self.logCallback(line)
        match = None if _LOG_RECORD.match(line) else _PERCENT.search(line)
        if match and self.progressCallback:
            fraction = min(max(float(match.group(1)) / 100.0, 0.0), 1.0)
            self.progressCallback(fraction, line)

    def _reportCompleted(self) -> None:
        if self._completedReported:
            return
        self._completedReported = True
        self.stopPolling()
        if self.completedCallback:
            self.completedCallback(self.returnCode)

    def waitForCompletion(self, timeout: Optional[float] = None, interval: float = 0.05) -> int:
        """Block (polling) until the process ends; raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"{' '.join(self.command)} did not finish within {timeout} s")
            time.sleep(interval)

    def cancel(self) -> None:
        """Kill the process and all its children; the return code becomes :data:`CANCELLED`."""
        if self._proc is None or self._completedReported:
            return
        if self._proc.poll() is None:
            self._killTree()
        self.returnCode = CANCELLED
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logging.warning("CondNet: process %d did not exit after kill", self._proc.pid)
        self.poll()

    def _killTree(self) -> None:
        pid = self._proc.pid
        try:
            import psutil  # bundled with Slicer; the most reliable way on every OS

            parent = psutil.Process(pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
            return
        except ImportError:
            pass
        except Exception as err:  # already gone
            logging.debug("CondNet: psutil kill of %d: %s", pid, err)
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        else:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # -- Qt polling (GUI only) ------------------------------------------------------------------
    def startPolling(self, intervalMs: int = 250) -> None:
        """Poll from a ``QTimer`` on the GUI thread until the process ends (needs Qt)."""
        import qt

        self._timer = qt.QTimer()
        self._timer.setInterval(int(intervalMs))
        self._timer.connect("timeout()", self.poll)
        self._timer.start()

    def stopPolling(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def __del__(self):
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._killTree()
        except Exception:
            pass
