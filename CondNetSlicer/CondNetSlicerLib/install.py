"""Python dependencies inside Slicer, installed lazily (on the first Apply, never at import).

torch comes from the SlicerPyTorch extension (``PyTorchUtils``), which picks the wheel matching the
computer's CUDA; without that extension it falls back to ``slicer.util.pip_install``.  The other
packages are listed in ``Resources/requirements.txt`` and installed with ``slicer.packaging.pip_ensure``
and ``slicer.packaging.load_requirements`` (Slicer >= 5.12, Slicer pull request #9010: asks first,
detects when a restart is needed, skipped under testing) or, in older Slicer, with
``slicer.util.pip_install`` after a confirmation.  ``slicer.packaging`` is a submodule that ``import
slicer`` does not bind, so it is imported explicitly; development builds before 5.12 called it
``slicer.pydeps``, which is tried next.  Packages Slicer bundles (numpy, scipy, SimpleITK) are never
listed: replacing them breaks Slicer (SlicerTotalSegmentator issue #4).  They are also pinned to their installed
versions by a constraints file while the others install, so that a dependency's range (numba: numpy < 2.6) makes
pip fail with a message instead of replacing them.
"""

import contextlib
import importlib
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import slicer

__all__ = [
    "MINIMUM_TORCH",
    "SLICER_PACKAGING_MODULES",
    "InstallError",
    "deviceReport",
    "ensureRequirements",
    "ensureTorch",
    "missingRequirements",
    "slicerPackaging",
]

#: Oldest torch the package is tested with (pyproject.toml: torch>=2.1).
MINIMUM_TORCH = "2.1"


class InstallError(RuntimeError):
    """A dependency could not be installed; ``restartRequired`` says whether restarting Slicer may fix it."""

    def __init__(self, message: str, restartRequired: bool = False):
        super().__init__(message)
        self.restartRequired = restartRequired


def _log(logCallback, text: str) -> None:
    logging.info(text)
    if logCallback:
        logCallback(text)


def _versionTuple(text: str) -> tuple:
    from packaging.version import Version

    return Version(text.split("+")[0]).release


def ensureTorch(*, interactive: bool = True, logCallback: Optional[Callable[[str], None]] = None):
    """Import torch, installing it first when missing; return the module.

    Raises
    ------
    InstallError
        If the user declines, the install fails, or the installed torch is older than :data:`MINIMUM_TORCH`.
    """
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None:
        try:
            import PyTorchUtils
        except ImportError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            _log(logCallback, "Installing PyTorch through the PyTorch extension (this can take several minutes)...")
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=interactive, torchVersionRequirement=f">={MINIMUM_TORCH}"
            )
            if torch is None:
                raise InstallError("PyTorch is required by CondNet and was not installed.")
        else:
            if interactive and not slicer.util.confirmOkCancelDisplay(
                "CondNet needs PyTorch, which is not installed. Install it now with pip (CPU/CUDA wheel chosen by pip; "
                "installing the 'PyTorch' extension first picks the right CUDA build)? This can take several minutes."
            ):
                raise InstallError("PyTorch is required by CondNet; the installation was declined.")
            _log(logCallback, "Installing PyTorch with pip (this can take several minutes)...")
            slicer.util.pip_install(f"torch>={MINIMUM_TORCH}")
            importlib.invalidate_caches()
            import torch
    if _versionTuple(torch.__version__) < _versionTuple(MINIMUM_TORCH):
        raise InstallError(
            f"CondNet needs PyTorch >= {MINIMUM_TORCH}; PyTorch {torch.__version__} is installed. Update it in the "
            "'PyTorch Utils' module and restart Slicer.",
            restartRequired=True,
        )
    return torch


def _readRequirements(path: Path) -> List[str]:
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("-"):
            lines.append(line)
    return lines


def missingRequirements(path: Path) -> List[str]:
    """Requirements of ``path`` that are not installed at an acceptable version."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for text in _readRequirements(path):
        requirement = Requirement(text)
        try:
            if version(requirement.name) in requirement.specifier:
                continue
        except PackageNotFoundError:
            pass
        missing.append(text)
    return missing


#: Slicer's package-management module, by preference: the released name, then the pre-release one.
SLICER_PACKAGING_MODULES = ("slicer.packaging", "slicer.pydeps")


def slicerPackaging():
    """Slicer's module with ``pip_ensure`` and ``load_requirements`` (Slicer >= 5.12), or None in older Slicer."""
    for name in SLICER_PACKAGING_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # absent (ModuleNotFoundError) or broken: fall back to the next one
            logging.debug("CondNet: %s is not usable", name, exc_info=True)
            continue
        if callable(getattr(module, "pip_ensure", None)) and callable(getattr(module, "load_requirements", None)):
            return module
    return None


#: Packages Slicer bundles, pinned while CondNet's requirements are installed.
BUNDLED = ("numpy", "scipy", "SimpleITK", "vtk", "requests")


@contextlib.contextmanager
def _bundledConstraints():
    """A pip constraints file pinning the installed version of each of :data:`BUNDLED`; removed afterwards."""
    import os
    import tempfile
    from importlib.metadata import PackageNotFoundError, version

    lines = []
    for name in BUNDLED:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    handle, path = tempfile.mkstemp(prefix="CondNet-constraints-", suffix=".txt")
    try:
        with open(handle, "w", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")
        yield Path(path)
    finally:
        os.remove(path)


def ensureRequirements(
    requirementsPath, *, interactive: bool = True, logCallback: Optional[Callable[[str], None]] = None
) -> None:
    """Make torch and every package of ``requirementsPath`` importable (see the module docstring).

    Raises
    ------
    InstallError
        If an installation is declined or fails.
    """
    ensureTorch(interactive=interactive, logCallback=logCallback)
    requirementsPath = Path(requirementsPath)
    packaging = slicerPackaging()
    if packaging is not None:
        try:
            with _bundledConstraints() as constraints:
                packaging.pip_ensure(packaging.load_requirements(requirementsPath), constraints=str(constraints),
                                     prompt_install=interactive, requester="CondNet")
        except RuntimeError as err:  # declined
            raise InstallError(f"CondNet's Python packages were not installed: {err}") from err
        except subprocess.CalledProcessError as err:
            raise InstallError(f"installing CondNet's Python packages failed: {err}", restartRequired=True) from err
        importlib.invalidate_caches()
        return
    missing = missingRequirements(requirementsPath)
    if not missing:
        return
    if interactive and not slicer.util.confirmOkCancelDisplay(
        "CondNet needs these Python packages: " + ", ".join(missing) + ". Install them now?"
    ):
        raise InstallError("CondNet's Python packages were not installed: the installation was declined.")
    _log(logCallback, "Installing " + ", ".join(missing) + "...")
    try:
        with _bundledConstraints() as constraints:
            slicer.util.pip_install(missing + ["-c", str(constraints)])
    except Exception as err:
        raise InstallError(f"installing {', '.join(missing)} failed: {err}", restartRequired=True) from err
    importlib.invalidate_caches()


#: Run by :func:`deviceReport` in a child process: prints the GPU's name and free and total memory as JSON.
_GPU_QUERY = """
import json
import torch
free, total = torch.cuda.mem_get_info()
print(json.dumps({"name": torch.cuda.get_device_name(0), "free_gib": free / 2**30, "total_gib": total / 2**30}))
"""

_gpuReports: Dict[str, tuple] = {}


def deviceReport(device: str = "auto", *, maxAgeS: float = 30.0) -> dict:
    """What ``device`` resolves to: name, torch and CUDA versions, free and total GPU memory (GiB).

    The GPU's memory is read in a short child process with Slicer's Python (about 2 s, then reused for ``maxAgeS``
    seconds): reading it creates a CUDA context, which in Slicer's own process would hold a few hundred MB of GPU
    memory until Slicer closes, while the work itself runs in background processes.

    Raises
    ------
    ValueError
        If ``device`` is ``"cuda"`` and PyTorch sees no usable CUDA GPU, or the GPU query fails.
    """
    import torch

    from .process import childEnvironment, pythonExecutable

    report = {
        "requested": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),  # creates no CUDA context
    }
    if device == "cuda" and not report["cuda_available"]:
        raise ValueError("device 'cuda' was chosen but no CUDA GPU is usable by PyTorch; choose 'cpu' or 'auto'")
    if device not in ("auto", "cuda") or not report["cuda_available"]:
        # Apple MPS stays off until our kernels are tested on it (float64 and some scatter ops are missing there).
        return {**report, "device": "cpu", "name": "CPU"}
    cached = _gpuReports.get(device)
    if cached is None or time.monotonic() - cached[0] >= maxAgeS:
        try:
            done = subprocess.run([pythonExecutable(), "-c", _GPU_QUERY], capture_output=True, text=True,
                                  env=childEnvironment(), timeout=120, check=False,
                                  creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console on Windows
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ValueError(f"could not read the GPU's memory: {err}") from err
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ValueError(f"could not read the GPU's memory: {why}")
        cached = _gpuReports[device] = (time.monotonic(), json.loads(lines[-1]))
    return {**report, "device": "cuda", **cached[1]}
