"""Static checks of the Slicer extension: CMake file lists, the .ui file against the widget code and the
parameter node, Python 3.9 syntax, startup imports, requirements and sample-data checksums."""

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "CondNetSlicer"
MODULE_FILE = MODULE_DIR / "CondNetSlicer.py"
UI_FILE = ROOT / "Resources" / "UI" / "CondNetSlicer.ui"
SHARED_MNI = ROOT.parent / "shared" / "data" / "mni152"


def cmake_list(text: str, variable: str) -> list:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def project_files(folder: Path) -> set:
    """Files under ``folder`` that git would ship (tracked or not ignored), relative to the root."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", str(folder.relative_to(ROOT))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        files = {name for name in listed if (ROOT / name).is_file()}
    except (OSError, subprocess.CalledProcessError):
        files = {str(p.relative_to(ROOT)) for p in folder.rglob("*") if p.is_file()}
    return {name for name in files if "__pycache__" not in name and not Path(name).name.startswith(".")}


# ------------------------------------------------------------------------------------------ CMake
def paste_ready(entries) -> str:
    return "\n".join(f"  {entry}" for entry in sorted(entries))


def test_module_cmake_lists_every_python_file_of_the_module_and_the_package():
    listed = cmake_list((MODULE_DIR / "CMakeLists.txt").read_text(), "MODULE_PYTHON_SCRIPTS")
    assert len(listed) == len(set(listed)), "duplicate entries"
    listed = {entry.replace("${MODULE_NAME}", "CondNetSlicer") for entry in listed}
    expected = {"CondNetSlicer.py"}
    lib = project_files(MODULE_DIR / "CondNetSlicerLib")
    expected |= {str(Path(name).relative_to("CondNetSlicer")) for name in lib if name.endswith(".py")}
    expected |= {"../" + name for name in project_files(ROOT / "CondNetLogic") if name.endswith(".py")}
    assert listed == expected, (
        f"missing: {sorted(expected - listed)}; not on disk: {sorted(listed - expected)}. "
        f"MODULE_PYTHON_SCRIPTS in CondNetSlicer/CMakeLists.txt should hold:\n{paste_ready(expected)}"
    )


def test_module_cmake_lists_every_resource():
    listed = cmake_list((MODULE_DIR / "CMakeLists.txt").read_text(), "MODULE_PYTHON_RESOURCES")
    assert len(listed) == len(set(listed)), "duplicate entries"
    expected = {"../" + name for name in project_files(ROOT / "Resources")}
    assert set(listed) == expected, (
        f"missing: {sorted(expected - set(listed))}; not on disk: {sorted(set(listed) - expected)}. "
        f"MODULE_PYTHON_RESOURCES in CondNetSlicer/CMakeLists.txt should hold:\n{paste_ready(expected)}"
    )
    assert "../Resources/UI/CondNetSlicer.ui" in listed
    assert "../Resources/Icons/CondNetSlicer.png" in listed


def test_module_cmake_builds_with_generic_tests_and_the_unittest():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS.*\)", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    assert re.search(r'set\(EXTENSION_SCREENSHOTURLS "[^"]*"\)', text)  # may be empty: no screenshot yet
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(CondNetSlicer)" in text
    assert "find_package(Slicer REQUIRED)" in text


#: URLs into this repository's main branch: raw files and GitHub's file view.
REPO_URL = re.compile(
    r"https://(?:raw\.githubusercontent\.com/condnet-slicer/condnet-slicer/main|"
    r"github\.com/condnet-slicer/condnet-slicer/blob/main)/([^\s\"';]+)"
)


@pytest.mark.parametrize("name", ["CMakeLists.txt", "CondNetSlicer/CMakeLists.txt", "CondNetSlicer/CondNetSlicer.py"])
def test_every_url_into_the_repository_names_a_file_that_exists(name):
    text = (ROOT / name).read_text()
    paths = REPO_URL.findall(text)
    if name == "CMakeLists.txt":
        assert len(paths) >= 2  # the homepage and the icon at least
    missing = [path for path in paths if not (ROOT / path).is_file()]
    assert not missing, f"{name} links to files that are not in the repository: {missing}"


def test_extension_screenshots_are_repository_images():
    text = (ROOT / "CMakeLists.txt").read_text()
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]*)"\)', text).group(1).split()
    for url in urls:
        match = REPO_URL.fullmatch(url)
        assert match, url
        assert match.group(1).startswith("docs/images/"), url
        assert (ROOT / match.group(1)).is_file(), url


# ------------------------------------------------------------------------------------------ install tree
SLICER_SCRIPTED = "lib/Slicer-5.8/qt-scripted-modules"


def test_module_cmake_installs_the_package_and_resources_beside_the_module():
    """Text-level check: slicerMacroBuildScriptedModule installs only qt-scripted-modules/, so the "../"
    entries (CondNetLogic/, Resources/) need their own install rule, into the folder above it."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(
        r'get_filename_component\((\w+) "\$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}" DIRECTORY\)', text
    )
    parent = re.search(r'get_filename_component\((\w+) "\$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}"', text)
    loop = re.search(
        r"foreach\(\w+ IN LISTS MODULE_PYTHON_SCRIPTS MODULE_PYTHON_RESOURCES\)(.*?)endforeach\(\)", text, re.S
    )
    assert loop, "no install loop over the two file lists"
    body = loop.group(1)
    assert "install(FILES" in body
    assert f'DESTINATION "${{{parent.group(1)}}}/' in body
    listed = cmake_list(text, "MODULE_PYTHON_SCRIPTS") + cmake_list(text, "MODULE_PYTHON_RESOURCES")
    outside = {entry.split("/")[1] for entry in listed if entry.startswith("../")}
    assert outside == {"CondNetLogic", "Resources"}


STUB_SLICER = """
cmake_minimum_required(VERSION 3.16)
project(CondNetInstallCheck NONE)
# What Slicer's extension build defines, for a Linux extension (Slicer_INSTALL_ROOT "./").
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "{scripted}")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "./${{Slicer_QTSCRIPTEDMODULES_LIB_DIR}}")
# slicerMacroBuildScriptedModule -> ctkMacroCompilePythonScript(... NO_INSTALL_SUBDIR): each listed file is
# copied to <build>/<scripted dir>/<entry>, and only <build>/<scripted dir>/ is installed.
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${{ARGN}})
  set(_dest "${{CMAKE_BINARY_DIR}}/${{Slicer_QTSCRIPTEDMODULES_LIB_DIR}}")
  foreach(_file IN LISTS MY_SCRIPTS MY_RESOURCES)
    get_filename_component(_target "${{_dest}}/${{_file}}" ABSOLUTE)
    configure_file("${{CMAKE_CURRENT_SOURCE_DIR}}/${{_file}}" "${{_target}}" COPYONLY)
  endforeach()
  install(DIRECTORY "${{_dest}}/" DESTINATION "${{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}}"
    COMPONENT RuntimeLibraries USE_SOURCE_PERMISSIONS)
endmacro()
macro(slicer_add_python_unittest)
endmacro()
set(BUILD_TESTING OFF)
add_subdirectory("{module}" CondNetSlicer)
"""


def tree(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_install_tree_has_the_build_tree_layout_and_the_package_runs_from_it(tmp_path):
    """Configure the module with stand-ins for Slicer's macros, install it, and import the package from the
    install tree: CondNetLogic/ and Resources/ must sit beside qt-scripted-modules/ as in the build tree."""
    source = tmp_path / "stub"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(STUB_SLICER.format(scripted=SLICER_SCRIPTED, module=MODULE_DIR.as_posix()))
    build, prefix = tmp_path / "build", tmp_path / "install"
    for command in (
        ["cmake", "-S", str(source), "-B", str(build)],
        ["cmake", "--install", str(build), "--prefix", str(prefix)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    built = tree(build / "lib" / "Slicer-5.8")
    installed = tree(prefix / "lib" / "Slicer-5.8")
    assert installed == built
    assert {
        "qt-scripted-modules/CondNetSlicer.py",
        "qt-scripted-modules/CondNetSlicerLib/logic.py",
        "CondNetLogic/__init__.py",
        "CondNetLogic/solver/spfd.py",
        "Resources/UI/CondNetSlicer.ui",
        "Resources/weights.json",
    } <= installed
    # The package and its resources resolve inside the install tree, as CondNetSlicer.py's PACKAGE_PARENT
    # (the folder above the module's) and CondNetSlicerLib.process put it on sys.path / PYTHONPATH.
    parent = prefix / "lib" / "Slicer-5.8"
    script = (
        "import CondNetLogic, CondNetLogic.conductivity as c, pathlib\n"
        "ui = c.resource_path('UI', 'CondNetSlicer.ui')\n"
        "print(pathlib.Path(CondNetLogic.__file__).resolve())\n"
        "print(ui.resolve(), ui.is_file())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(parent), "PYTHONSAFEPATH": "1"},
    )
    assert done.returncode == 0, done.stderr
    package, ui = done.stdout.splitlines()
    assert Path(package) == (parent / "CondNetLogic" / "__init__.py").resolve()
    assert ui == f"{(parent / 'Resources' / 'UI' / 'CondNetSlicer.ui').resolve()} True"


# ------------------------------------------------------------------------------------------ .ui file
def ui_widgets() -> dict:
    tree = ET.parse(UI_FILE)  # raises on malformed XML
    return {w.get("name"): w for w in tree.iter("widget")}


def parameter_fields() -> dict:
    """Field name -> annotation source of CondNetSlicerParameterNode."""
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "CondNetSlicerParameterNode":
            return {item.target.id: item for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("CondNetSlicerParameterNode not found")


def test_ui_is_well_formed_and_names_are_unique():
    tree = ET.parse(UI_FILE)
    names = [w.get("name") for w in tree.iter("widget")]
    assert len(names) == len(set(names))
    assert tree.getroot().find("class").text == "CondNetSlicer"
    custom = {c.find("class").text for c in tree.getroot().iter("customwidget")}
    used = {w.get("class") for w in tree.iter("widget")}
    assert {cls for cls in used if not cls.startswith("Q")} <= custom
    for connection in tree.getroot().iter("connection"):
        assert connection.find("receiver").text in names


def test_every_widget_the_code_uses_exists_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    missing = used - set(ui_widgets())
    assert not missing, f"widgets used by CondNetSlicer.py but absent from the .ui: {sorted(missing)}"
    assert {"estimateButton", "computeEFieldButton", "exportButton", "cancelButton", "progressBar"} <= used


def test_parameter_names_in_the_ui_match_the_parameter_node():
    fields = parameter_fields()
    bound = {}
    for widget in ui_widgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget
    assert set(bound) <= set(fields), f"unknown parameters in the .ui: {sorted(set(bound) - set(fields))}"
    # Set by code (not by a widget): the coil choice (filled at runtime), the nodes made for the coil and the 10-10
    # positions, the motor threshold's field (Use as motor threshold), and the E-field spread's outputs (shown by the
    # line under its button and as the overlay).
    assert set(fields) - set(bound) == {"coilName", "coilModel", "coilTransform", "motorThreshold",
                                        "eegPositionsMarkup", "eFieldSpreadVolume", "eFieldSpreadTable"}
    for name, widget in bound.items():
        annotation = ast.unparse(fields[name].annotation)
        if "Choice(" in annotation:
            choices = ast.literal_eval(re.search(r"Choice\((\[.*?\])\)", annotation, re.S).group(1))
            items = [item.find("property/string").text for item in widget.findall("item")]
            assert widget.get("class") == "QComboBox", name
            assert items == choices, name
        if annotation.startswith("vtkMRML"):
            node_types = [s.text for s in widget.find("property[@name='nodeTypes']/stringlist")]
            assert widget.get("class") == "qMRMLNodeComboBox", name
            assert node_types == [annotation], name
        # The widget classes Slicer's parameterNodeWrapper GUI connectors accept for each type.
        if annotation == "pathlib.Path":
            assert widget.get("class") == "ctkPathLineEdit", name
        if annotation == "bool":
            assert widget.get("class") == "QCheckBox", name
        if annotation.startswith("Annotated[float"):
            assert widget.get("class") in ("QDoubleSpinBox", "ctkSliderWidget"), name


def test_table_view_is_not_given_the_scene_without_a_table_view_node():
    """qMRMLTableView.cxx: once it has a scene, every EndBatchProcessEvent (loading data or a scene, closing the
    scene) calls updateWidgetFromViewNode(), which empties the view when no vtkMRMLTableViewNode is set.  The
    panel shows its table with setMRMLTableNode only, so giving the view the scene would blank it after each load."""
    tree = ET.parse(UI_FILE)
    views = {w.get("name") for w in tree.iter("widget") if w.get("class") == "qMRMLTableView"}
    assert views, "the statistics table view is gone"
    for connection in tree.getroot().iter("connection"):
        if connection.find("receiver").text in views:
            assert not connection.find("slot").text.startswith("setMRMLScene"), connection.find("receiver").text
    code = MODULE_FILE.read_text()
    assert "setMRMLTableViewNode" not in code
    for view in views:
        assert f"self.ui.{view}.setMRMLTableNode(" in code


def test_self_test_loads_both_sample_volumes():
    """SampleData.downloadSample returns the first loaded node only (Modules/Scripted/SampleData/SampleData.py);
    a sample of several files must be loaded with downloadSamples to get all its nodes."""
    for node in ast.walk(ast.parse(MODULE_FILE.read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "downloadSample":
                assert not any(isinstance(t, (ast.Tuple, ast.List)) for t in node.targets), (
                    f"line {node.lineno}: downloadSample returns one node; use downloadSamples"
                )
    assert 'SampleData.downloadSamples("CondNetMNI152")' in MODULE_FILE.read_text()


def test_eeg_choices_are_positions_the_package_knows():
    from CondNetLogic.scalp import EEG_1010

    annotation = ast.unparse(parameter_fields()["eegPosition"].annotation)
    choices = ast.literal_eval(re.search(r"Choice\((\[.*?\])\)", annotation, re.S).group(1))
    assert set(choices) == set(EEG_1010)
    assert choices[0] == "C3"


# ------------------------------------------------------------------------------------------ Python files
def slicer_python_files() -> list:
    """Every Python file Slicer imports: the module, its Lib, and the package."""
    files = [MODULE_FILE, *sorted((MODULE_DIR / "CondNetSlicerLib").glob("*.py"))]
    return files + sorted(p for p in (ROOT / "CondNetLogic").rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", slicer_python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_slicer_imports_are_python_3_9(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_module_file_imports_only_stdlib_slicer_vtk_qt_at_top_level():
    allowed = set(sys.stdlib_module_names) | {"slicer", "vtk", "qt"}
    for node in ast.parse(MODULE_FILE.read_text()).body:
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= allowed, f"top-level import of {roots - allowed} in CondNetSlicer.py (line {node.lineno})"


def test_no_print_or_dialog_in_the_logic():
    text = (MODULE_DIR / "CondNetSlicerLib" / "logic.py").read_text()
    assert "errorDisplay" not in text
    assert "confirm" not in text
    assert "print(" not in text


# ------------------------------------------------------------------------------------------ dependencies, data
def test_requirements_match_pyproject_minus_what_slicer_bundles():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in project}
    lines = [line.strip() for line in (ROOT / "Resources" / "requirements.txt").read_text().splitlines()]
    listed = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in lines if r and not r.startswith("#")}
    not_installed = {"torch", "numpy", "scipy", "simpleitk", "matplotlib"}
    assert listed == {name: spec for name, spec in declared.items() if name not in not_installed}


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_MNI.is_dir(), reason="../shared/data/mni152 is absent")
def test_sample_data_checksums_match_the_mni152_files():
    text = MODULE_FILE.read_text()
    for key, name in (("MNI152_T1_SHA256", "MNI152_T1_2mm.nii.gz"), ("MNI152_T2_SHA256", "MNI152_T2_2mm.nii.gz")):
        declared = re.search(rf'{key} = "([0-9a-f]{{64}})"', text).group(1)
        assert hashlib.sha256((SHARED_MNI / name).read_bytes()).hexdigest() == declared
        assert f'"{name}"' in text or f'+ "{name}"' in text


# ------------------------------------------------------------------- calls the widget makes, by signature
def _calls_on(path: Path, owner: str) -> list:
    """``(line, name, positional count, keyword names)`` of each call ``<owner>.<name>(...)`` in ``path``, where
    ``owner`` is a dotted name such as ``self.logic`` (calls with ``*args`` or ``**kwargs`` are left out)."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if ast.unparse(node.func.value) != owner:
            continue
        if any(isinstance(arg, ast.Starred) for arg in node.args) or any(k.arg is None for k in node.keywords):
            continue
        calls.append((node.lineno, node.func.attr, len(node.args), [k.arg for k in node.keywords]))
    return calls


def _mismatches(calls: list, resolve) -> list:
    """Calls whose target is missing or whose arguments its signature does not accept."""
    import inspect

    problems = []
    for line, name, positional, keywords in calls:
        target = resolve(name)
        if target is None:
            problems.append(f"line {line}: {name} does not exist")
            continue
        try:
            inspect.signature(target).bind(*([None] * positional), **dict.fromkeys(keywords))
        except TypeError as err:
            problems.append(f"line {line}: {name}({positional} positional, keywords {keywords}): {err}")
    return problems


def test_widget_calls_into_the_logic_fit_its_signatures():
    """The panel (never run here) calls the Logic with arguments its methods accept: a renamed keyword or a
    missing method would otherwise show only inside Slicer."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    sys.path.insert(0, str(MODULE_DIR))
    from CondNetSlicerLib.logic import CondNetSlicerLogic

    logic = CondNetSlicerLogic.__new__(CondNetSlicerLogic)  # bound methods, without a scene
    # Inherited inside Slicer from ScriptedLoadableModuleLogic, which the slicer-core wheel lacks.
    inherited = {"getParameterNode"}
    calls = [call for call in _calls_on(MODULE_FILE, "self.logic") if call[1] not in inherited]
    assert len(calls) > 20
    assert not _mismatches(calls, lambda name: getattr(logic, name, None))


def test_module_calls_into_slicer_util_fit_its_signatures():
    """The same for ``slicer.util`` (the wheel's ``slicer/util.py`` is Slicer's own) in the panel and its library."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    import slicer.util as util

    problems, checked = [], 0
    for path in [MODULE_FILE, *sorted((MODULE_DIR / "CondNetSlicerLib").glob("*.py"))]:
        calls = _calls_on(path, "slicer.util")
        checked += len(calls)
        problems += [f"{path.name} {p}" for p in _mismatches(calls, lambda name: getattr(util, name, None))]
    assert checked > 20
    assert not problems


def test_widget_calls_into_its_helper_modules_fit_their_signatures():
    """``install``, ``testing`` and the background process, as the panel and its self-test call them."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    sys.path.insert(0, str(MODULE_DIR))
    from CondNetSlicerLib import install, testing
    from CondNetSlicerLib.process import BackgroundProcess

    running = BackgroundProcess.__new__(BackgroundProcess)
    problems = []
    for owner, target in (("install", install), ("testing", testing), ("self._process", running),
                          ("process", running)):
        calls = _calls_on(MODULE_FILE, owner)
        assert calls, owner
        problems += _mismatches(calls, lambda name, target=target: getattr(target, name, None))
    assert not problems


def test_mrml_classes_and_events_the_module_names_exist():
    """``slicer.vtkMRML...`` / ``slicer.vtkSlicer...`` classes and their events or static methods, as named in the
    panel and its library, exist in Slicer's MRML library (the wheel's)."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    used = set()
    for path in [MODULE_FILE, *sorted((MODULE_DIR / "CondNetSlicerLib").glob("*.py"))]:
        text = path.read_text()
        used |= set(re.findall(r"\bslicer\.(vtk\w+)(?:\.(\w+))?", text))
        used |= {(alias.name, "") for node in ast.walk(ast.parse(text))
                 if isinstance(node, ast.ImportFrom) and node.module == "slicer"
                 for alias in node.names if alias.name.startswith("vtk")}  # from slicer import vtkMRML...
    assert len(used) >= 10
    missing = [f"{name}.{member}" if member else name for name, member in sorted(used)
               if not hasattr(slicer, name) or (member and not hasattr(getattr(slicer, name), member))]
    assert not missing
