"""Put the fakes in place of the parts of Slicer that the ``slicer-core`` wheel lacks.

:func:`install` makes ``import qt`` / ``import ctk`` give :mod:`.fakeqt`, and adds to the real ``slicer`` package:
``slicer.app`` (a fake application: signals, override cursor, ``processEvents`` that runs hooks and due
timers), the dialogs of ``slicer.util`` (recorded in :data:`RECORD`, never shown; confirmations answer from
``RECORD["confirm_answers"]``, default No), ``slicer.i18n``, ``slicer.ScriptedLoadableModule`` (the few
members the panel uses, written for these tests), ``slicer.parameterNodeWrapper`` (:mod:`.parameter_node_wrapper`,
a stand-in), the qMRML widget classes, and a ``SampleData`` module that records registered samples.

Everything else of ``slicer.util`` is the wheel's, i.e. Slicer's own code: ``loadUI`` (through the fake
``QFile``/``QUiLoader``), ``childWidgetVariables``, ``tryWithErrorDisplay`` (shows ``errorDisplay``, then
re-raises), ``NodeModify``, ``VTKObservationMixin``, ``settingsValue``, ``arrayFromVolume``...

Install into a fresh interpreter only: the fakes replace modules for the whole process.
"""

import logging
import os
import sys
import types
import unittest

from . import fakeqt

RECORD = {"dialogs": [], "status": [], "confirm_answers": [], "pip": [], "samples": [], "cursor": 0,
          "processEvents": 0, "processEventsHooks": []}


def _installed():
    return sys.modules.get("qt") is fakeqt.qt


def install():
    """Install the fakes (once per process); returns the ``slicer`` package."""
    if _installed():
        return sys.modules["slicer"]
    if "qt" in sys.modules or "ctk" in sys.modules:
        raise RuntimeError("a real qt/ctk is already imported: the fakes must run in a fresh interpreter")
    sys.modules["qt"] = fakeqt.qt
    sys.modules["ctk"] = fakeqt.ctk

    import slicer
    import slicer.util

    slicer.qMRMLNodeComboBox = fakeqt.qMRMLNodeComboBox
    slicer.qMRMLWidget = fakeqt.qMRMLWidget
    slicer.qMRMLTableView = fakeqt.qMRMLTableView
    slicer.app = FakeApp()

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    sys.modules["slicer.i18n"] = slicer.i18n = i18n

    slicer.util.errorDisplay = _errorDisplay
    slicer.util.confirmYesNoDisplay = _confirm("confirmYesNo")
    slicer.util.confirmOkCancelDisplay = _confirm("confirmOkCancel")
    slicer.util.warningDisplay = _message("warning")
    slicer.util.infoDisplay = _message("info")
    slicer.util.delayDisplay = _message("delay")
    slicer.util.showStatusMessage = lambda message, duration=0: RECORD["status"].append(message) or True
    slicer.util.startupEnvironment = lambda: dict(os.environ)
    slicer.util.pip_install = _pipInstall
    slicer.util.mainWindow = lambda: None

    module = types.ModuleType("slicer.ScriptedLoadableModule")
    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    sys.modules["slicer.ScriptedLoadableModule"] = slicer.ScriptedLoadableModule = module

    from . import parameter_node_wrapper

    sys.modules["slicer.parameterNodeWrapper"] = slicer.parameterNodeWrapper = parameter_node_wrapper

    sampleData = types.ModuleType("SampleData")
    sampleData.SampleDataLogic = types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kwargs: RECORD["samples"].append(kwargs)
    )
    sys.modules["SampleData"] = sampleData
    return slicer


# ------------------------------------------------------------------------------ slicer.app
class _ModuleManager(fakeqt.QObject):
    SIGNALS = ("moduleAboutToBeUnloaded",)


class FakeApp(fakeqt.QObject):
    SIGNALS = ("startupCompleted",)

    def __init__(self):
        super().__init__()
        self.applicationName = "Slicer"
        self._moduleManager = _ModuleManager()

    def processEvents(self, *args):
        """What the event loop would do meanwhile: the test's hooks (a user's clicks), then due timers."""
        RECORD["processEvents"] += 1
        for hook in list(RECORD["processEventsHooks"]):
            hook()
        fakeqt.pumpTimers()

    def setOverrideCursor(self, cursor):
        RECORD["cursor"] += 1

    def restoreOverrideCursor(self):
        RECORD["cursor"] -= 1

    def testingEnabled(self):
        return False

    def moduleManager(self):
        return self._moduleManager

    def startupEnvironment(self):
        return dict(os.environ)


# ------------------------------------------------------------------------------ slicer.util dialogs
def _errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs):
    RECORD["dialogs"].append(("error", text, kwargs.get("detailedText", "")))
    logging.error(text)


def _confirm(kind):
    def confirm(text, windowTitle=None, parent=None, **kwargs):
        answer = RECORD["confirm_answers"].pop(0) if RECORD["confirm_answers"] else False
        RECORD["dialogs"].append((kind, text, answer))
        return answer

    return confirm


def _message(kind):
    def show(text, *args, **kwargs):
        RECORD["dialogs"].append((kind, text, ""))

    return show


def _pipInstall(*args, **kwargs):
    RECORD["pip"].append(args)
    raise RuntimeError("slicer.util.pip_install called under the fakes: a requirement is missing from the venv")


# ------------------------------------------------------------------------------ slicer.ScriptedLoadableModule
# Written for these tests: only the members CondNetSlicer.py and its logic use.
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__
        for name in ("title", "helpText", "acknowledgementText"):
            setattr(parent, name, "")
        for name in ("categories", "dependencies", "contributors"):
            setattr(parent, name, [])


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        super().__init__()
        if parent is None:
            raise NotImplementedError("the fakes build the panel with a parent widget, as Slicer does")
        self.parent = parent
        self.moduleName = type(self).__name__[: -len("Widget")]
        self.developerMode = False
        self.layout = parent.layout()

    def setup(self):
        pass

    def cleanup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = type(self).__name__[: -len("Logic")]

    def getParameterNode(self):
        """The module's singleton ``vtkMRMLScriptedModuleNode`` in ``slicer.mrmlScene``, made on first use."""
        import slicer

        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        _message("delay")(message)


# ------------------------------------------------------------------------------ scene
def makeScene():
    """A scene set up as the application does (``_mrml.application_scene``, as ``mrml_scene`` in
    Testing/Python/conftest.py), installed as ``slicer.mrmlScene``, with ``slicer.modules.markups``.  Returns
    ``(scene, objects to keep alive)``."""
    import slicer
    from _mrml import application_scene

    scene, _, markups, keep = application_scene()
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(markups=types.SimpleNamespace(logic=lambda: markups))
    return scene, keep
