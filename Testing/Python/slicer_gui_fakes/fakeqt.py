"""Fake ``qt`` / ``ctk`` / qMRML widget classes: enough of them to run the CondNet panel without Qt.

They follow Qt/PythonQt where the panel depends on it:

* Signals: ``widget.sig.connect(slot)`` and ``widget.connect("sig(args)", slot)``.  A slot gets only as many
  arguments as it accepts (PythonQt).  An exception in a slot is printed by PythonQt and the emitter goes on:
  here it is recorded in ``LOG["slot_exceptions"]`` (the scenario fails the step on it).
* A value set from code emits the change signals (valueChanged, currentIndexChanged, toggled...) only when
  the value really changes, as Qt does; spin boxes and sliders clamp to [minimum, maximum] and round to
  ``decimals``.
* ``QUiLoader`` builds the widget tree from the .ui XML: objectName -> ``name``, static properties ->
  attributes, ``stdset="0"`` properties -> dynamic properties (``property()``), combo box items, layouts as
  children, and the ``<connections>``.  A widget class the fakes lack raises, naming it.
* qMRMLNodeComboBox lists scene nodes of ``nodeTypes`` (no HideFromEditors nodes), selects None when asked
  for a node it cannot show, and, when its current node leaves the scene, selects None (``noneEnabled``) or
  the last remaining node, as qMRMLNodeComboBox does.  Selecting a node when one is added is NOT modelled.
* ``QTimer`` fires only from :func:`pumpTimers` (the test's event loop) and ``slicer.app.processEvents()``.

Reading an attribute a fake lacks records it in ``LOG["unknown_attrs"]`` and raises AttributeError, so a
panel change that uses more of Qt fails the scenario with the attribute's name instead of passing silently.
"""

import builtins
import inspect
import os
import time
import traceback
import types
import xml.etree.ElementTree as ET

LOG = {"slot_exceptions": [], "unknown_attrs": []}


def _positionalCount(fn):
    """How many positional arguments ``fn`` takes (None: any number)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind == parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def callSlot(slot, args, where):
    count = _positionalCount(slot)
    try:
        slot(*(args if count is None else args[:count]))
    except Exception as err:  # PythonQt prints the traceback and goes on
        LOG["slot_exceptions"].append((where, getattr(slot, "__qualname__", repr(slot)), err, traceback.format_exc()))


class Signal:
    def __init__(self, owner, name):
        self.owner, self.name, self.slots = owner, name, []

    def connect(self, slot):
        self.slots.append(slot)
        return True

    def disconnect(self, slot=None):
        if slot is None:
            self.slots.clear()
        elif slot in self.slots:
            self.slots.remove(slot)
        else:
            LOG["unknown_attrs"].append(f"disconnect of a slot that is not connected to {self.name}")

    def emit(self, *args):
        if getattr(self.owner, "_signalsBlocked", False):
            return
        for slot in list(self.slots):
            callSlot(slot, args, f"{getattr(self.owner, 'name', '?')}.{self.name}")


class QObject:
    SIGNALS = ("destroyed", "objectNameChanged")

    def __init__(self, parent=None, *args):
        self._signals = {}
        self._children = []
        self._parentObj = None
        self._dynprops = {}
        self.name = ""
        if isinstance(parent, QObject):
            self.setParent(parent)

    def _sig(self, name):
        if name not in self._signals:
            self._signals[name] = Signal(self, name)
        return self._signals[name]

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        for cls in type(self).__mro__:
            if name in cls.__dict__.get("SIGNALS", ()):
                return self._sig(name)
        LOG["unknown_attrs"].append(f"{type(self).__name__}({self.__dict__.get('name', '')}).{name}")
        raise AttributeError(f"fake {type(self).__name__} has no attribute {name!r}")

    def connect(self, signature, slot=None, *rest):
        if not isinstance(signature, str):
            raise NotImplementedError("the fakes support connect('signal(args)', slot) only")
        self._sig(signature.split("(")[0]).connect(slot)
        return True

    def disconnect(self, signature, slot=None):
        self._sig(signature.split("(")[0]).disconnect(slot)
        return True

    def property(self, name):
        if name in self._dynprops:
            return self._dynprops[name]
        return self.__dict__.get(name)

    def setProperty(self, name, value):
        self._dynprops[name] = value
        return True

    def children(self):
        return list(self._children)

    def parent(self):
        return self._parentObj

    def setParent(self, parent):
        if self._parentObj is not None and self in self._parentObj._children:
            self._parentObj._children.remove(self)
        self._parentObj = parent
        if parent is not None:
            parent._children.append(self)

    objectName = builtins.property(lambda self: self.name)

    def setObjectName(self, name):
        self.name = name

    def isWidgetType(self):
        return False

    def findChildren(self, cls=None):
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found.extend(child.findChildren(cls))
        return found

    def className(self):
        return type(self).__name__

    def blockSignals(self, block):
        was, self._signalsBlocked = getattr(self, "_signalsBlocked", False), bool(block)
        return was

    def deleteLater(self):
        pass

    def __repr__(self):
        return f"<fake {type(self).__name__} {self.__dict__.get('name', '')!r}>"


class QWidget(QObject):
    def __init__(self, parent=None, *args):
        super().__init__(parent)
        self._enabled = True
        self._visible = True
        self._layout = None
        self.toolTip = ""

    def isWidgetType(self):
        return True

    enabled = property(lambda self: self._enabled, lambda self, v: setattr(self, "_enabled", bool(v)))
    visible = property(lambda self: self._visible, lambda self, v: setattr(self, "_visible", bool(v)))

    def setEnabled(self, v):
        self.enabled = v

    def isEnabled(self):
        return self._enabled

    def setVisible(self, v):
        self.visible = v

    def isVisible(self):
        return self._visible

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setToolTip(self, text):
        self.toolTip = text

    def layout(self):
        return self._layout

    def setLayout(self, layout):
        self._layout = layout
        layout.setParent(self)

    def effectivelyVisible(self):
        widget = self
        while isinstance(widget, QWidget):
            if not widget._visible:
                return False
            widget = widget._parentObj
        return True

    def effectivelyEnabled(self):
        widget = self
        while isinstance(widget, QWidget):
            if not widget._enabled:
                return False
            widget = widget._parentObj
        return True


class QLayout(QObject):
    def __init__(self, parent=None, *args):
        super().__init__(None)
        self._items = []
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def _owner(self):
        owner = self._parentObj
        while owner is not None and not isinstance(owner, QWidget):
            owner = owner._parentObj
        return owner

    def addWidget(self, widget, *args):
        self._items.append(widget)
        owner = self._owner()
        if owner is not None:
            widget.setParent(owner)

    def count(self):
        return len(self._items)


class QVBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QLabel(QWidget):
    def __init__(self, text="", parent=None):
        super().__init__(parent if isinstance(parent, QObject) else None)
        self.text = text if isinstance(text, str) else ""


class QAbstractButton(QWidget):
    SIGNALS = ("clicked", "toggled", "pressed", "released")

    def __init__(self, text="", parent=None):
        super().__init__(parent if isinstance(parent, QObject) else None)
        self.text = text if isinstance(text, str) else ""
        self.checkable = False
        self._checked = False

    def _setChecked(self, v):
        v = bool(v)
        if v != self._checked:
            self._checked = v
            self._sig("toggled").emit(v)
            self._onCheckedChanged(v)

    def _onCheckedChanged(self, v):
        pass

    checked = property(lambda self: self._checked, lambda self, v: self._setChecked(v))

    def setChecked(self, v):
        self.checked = v

    def isChecked(self):
        return self._checked

    def setText(self, text):
        self.text = text

    def click(self):
        """QAbstractButton::click(): does nothing when the button is disabled."""
        if not self._enabled:
            return False
        self._sig("pressed").emit()
        self._sig("released").emit()
        if self.checkable:
            self.checked = not self._checked
        self._sig("clicked").emit(self._checked)
        return True


class QPushButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    SIGNALS = ("stateChanged",)

    def __init__(self, text="", parent=None):
        super().__init__(text, parent)
        self.checkable = True

    def _onCheckedChanged(self, v):
        self._sig("stateChanged").emit(2 if v else 0)


class QComboBox(QWidget):
    SIGNALS = ("currentIndexChanged", "currentTextChanged", "activated", "textActivated")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items = []
        self._index = -1
        self.editable = False

    @property
    def count(self):  # a Q_PROPERTY: PythonQt gives an int
        return len(self._items)

    def _setIndex(self, index):
        index = int(index)
        if index < -1 or index >= len(self._items):
            index = -1
        if index == self._index:
            return
        oldText = self.currentText
        self._index = index
        self._sig("currentIndexChanged").emit(index)
        if self.currentText != oldText:
            self._sig("currentTextChanged").emit(self.currentText)

    currentIndex = property(lambda self: self._index, lambda self, v: self._setIndex(v))

    def setCurrentIndex(self, index):
        self._setIndex(index)

    @property
    def currentText(self):
        return self._items[self._index] if self._index >= 0 else ""

    @currentText.setter
    def currentText(self, text):
        self.setCurrentText(text)

    def setCurrentText(self, text):
        # Qt >= 5.14, not editable: selects the matching item if there is one, else keeps the selection.
        index = self.findText(text)
        if index >= 0:
            self._setIndex(index)

    def findText(self, text, *args):
        try:
            return self._items.index(str(text))
        except ValueError:
            return -1

    def itemText(self, index):
        return self._items[index] if 0 <= index < len(self._items) else ""

    def addItem(self, text, *args):
        self._items.append(str(text))
        if len(self._items) == 1:
            self._setIndex(0)

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def clear(self):
        self._items = []
        if self._index != -1:
            self._index = -1
            self._sig("currentIndexChanged").emit(-1)
            self._sig("currentTextChanged").emit("")


class _NumberWidget(QWidget):
    SIGNALS = ("valueChanged", "editingFinished")
    DEFAULTS = (0.0, 99.99, 2)  # minimum, maximum, decimals

    def __init__(self, parent=None):
        super().__init__(parent)
        self._min, self._max, self._decimals = self.DEFAULTS
        self._value = 0.0
        self.singleStep = 1.0

    def _bound(self, v):
        return round(min(max(float(v), self._min), self._max), int(self._decimals))

    def _setValue(self, v):
        v = self._bound(v)
        if v != self._value:
            self._value = v
            self._sig("valueChanged").emit(v)

    value = property(lambda self: self._value, lambda self, v: self._setValue(v))

    def setValue(self, v):
        self._setValue(v)

    def _setMin(self, v):
        self._min = round(float(v), int(self._decimals))
        self._max = max(self._max, self._min)
        self._setValue(self._value)

    def _setMax(self, v):
        self._max = round(float(v), int(self._decimals))
        self._min = min(self._min, self._max)
        self._setValue(self._value)

    minimum = property(lambda self: self._min, lambda self, v: self._setMin(v))
    maximum = property(lambda self: self._max, lambda self, v: self._setMax(v))

    def _setDecimals(self, d):
        self._decimals = int(d)
        self._min = round(self._min, self._decimals)
        self._max = round(self._max, self._decimals)
        self._setValue(self._value)

    decimals = property(lambda self: self._decimals, lambda self, v: self._setDecimals(v))


class QDoubleSpinBox(_NumberWidget):
    DEFAULTS = (0.0, 99.99, 2)


class QProgressBar(QWidget):
    SIGNALS = ("valueChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum = 0, 100
        self._value = -1
        self.format = "%p%"
        self.history = []

    def _setValue(self, v):
        v = int(v)
        self.history.append(v)
        if v != self._value:
            self._value = v
            self._sig("valueChanged").emit(v)

    value = property(lambda self: self._value, lambda self, v: self._setValue(v))

    def setValue(self, v):
        self._setValue(v)

    def setFormat(self, fmt):
        if not isinstance(fmt, str):
            raise TypeError("QProgressBar.setFormat(QString)")
        self.format = fmt

    def reset(self):
        self._value = -1


class QPlainTextEdit(QWidget):
    SIGNALS = ("textChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lines = []
        self.readOnly = False
        self.maximumBlockCount = 0

    def appendPlainText(self, text):
        if not isinstance(text, str):
            raise TypeError(f"appendPlainText(QString) got {type(text).__name__}")
        self._lines.extend(text.split("\n"))
        if self.maximumBlockCount and len(self._lines) > self.maximumBlockCount:
            self._lines = self._lines[-self.maximumBlockCount:]
        self._sig("textChanged").emit()

    def toPlainText(self):
        return "\n".join(self._lines)

    def setPlainText(self, text):
        self._lines = text.split("\n") if text else []
        self._sig("textChanged").emit()

    def clear(self):
        self.setPlainText("")


class QFileDialog(QWidget):
    """Static dialogs only: ``getOpenFileName`` returns the next of ``answers`` ("" = cancelled), as PythonQt
    returns a string; each call is recorded in ``calls``."""

    answers = []
    calls = []

    @staticmethod
    def getOpenFileName(parent=None, caption="", directory="", filter="", *args):
        QFileDialog.calls.append((caption, directory, filter))
        return QFileDialog.answers.pop(0) if QFileDialog.answers else ""


class QIcon:
    def __init__(self, path=""):
        self.path = path


class QFile:
    ReadOnly = 1

    def __init__(self, path):
        self.path = str(path)

    def exists(self):
        return os.path.isfile(self.path)

    def open(self, mode):
        return True

    def close(self):
        pass


class _Enum:
    """``qt.Qt.<anything>``: distinct integers (the panel only passes them on)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return sum(ord(c) * 31**i for i, c in enumerate(name)) % 100003


Qt = _Enum()


# ---------------------------------------------------------------------------------------------- timers
ACTIVE_TIMERS = []


class QTimer(QObject):
    SIGNALS = ("timeout",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.interval = 0
        self._singleShot = False
        self._active = False
        self._due = 0.0

    def setInterval(self, ms):
        self.interval = int(ms)

    def setSingleShot(self, v):
        self._singleShot = bool(v)

    def start(self, ms=None):
        if ms is not None:
            self.interval = int(ms)
        self._active = True
        self._due = time.monotonic() + self.interval / 1000.0
        if self not in ACTIVE_TIMERS:
            ACTIVE_TIMERS.append(self)

    def stop(self):
        self._active = False
        if self in ACTIVE_TIMERS:
            ACTIVE_TIMERS.remove(self)

    def isActive(self):
        return self._active

    active = property(lambda self: self._active)

    @staticmethod
    def singleShot(ms, fn):
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(fn)
        timer.start(ms)


_pumping = [False]


def pumpTimers(force=False):
    """Fire every due (with ``force``: every active) timer once; return how many fired."""
    if _pumping[0]:  # Qt does not re-enter a timer's slot from processEvents inside it
        return 0
    _pumping[0] = True
    fired = 0
    try:
        now = time.monotonic()
        for timer in list(ACTIVE_TIMERS):
            if not timer._active or (not force and timer._due > now):
                continue
            if timer._singleShot:
                timer.stop()
            else:
                timer._due = now + timer.interval / 1000.0
            timer._sig("timeout").emit()
            fired += 1
    finally:
        _pumping[0] = False
    return fired


# ---------------------------------------------------------------------------------------------- ctk
class ctkCollapsibleButton(QAbstractButton):
    SIGNALS = ("contentsCollapsed",)

    def __init__(self, text="", parent=None):
        super().__init__(text, parent)
        self.collapsed = False


class ctkSliderWidget(_NumberWidget):
    DEFAULTS = (0.0, 99.0, 2)


class ctkPathLineEdit(QWidget):
    SIGNALS = ("currentPathChanged", "validInputChanged")
    Files, Dirs, Drives, Readable = 1, 2, 4, 8

    def __init__(self, parent=None):
        super().__init__(parent)
        self._path = ""
        self.filters = None
        self.nameFilters = []

    def _setPath(self, path):
        path = str(path)
        if path != self._path:
            self._path = path
            self._sig("currentPathChanged").emit(path)

    currentPath = property(lambda self: self._path, lambda self, v: self._setPath(v))

    def setCurrentPath(self, path):
        self._setPath(path)


# ---------------------------------------------------------------------------------------------- qMRML
class qMRMLWidget(QWidget):
    SIGNALS = ("mrmlSceneChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        if scene is self._scene:
            return
        self._scene = scene
        self._sig("mrmlSceneChanged").emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(QWidget):
    SIGNALS = ("currentNodeChanged", "currentNodeIDChanged", "nodeAdded", "nodeAboutToBeRemoved", "nodeActivated",
               "nodeAddedByUser", "mrmlSceneChanged")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.nodeTypes = []
        self.noneEnabled = False
        self.showChildNodeTypes = True
        self.addEnabled = True
        self.removeEnabled = True
        self.renameEnabled = False
        self.editEnabled = False
        self.showHidden = False
        self.selectNodeUponCreation = True
        self._scene = None
        self._current = None
        self._requested = None
        self._tags = []
        self._enabled = False  # enabled once it has a scene

    def _shows(self, node):
        if node is None or self._scene is None or not self._scene.IsNodePresent(node):
            return False
        if not self.showHidden and node.GetHideFromEditors():
            return False
        return any(node.IsA(t) if self.showChildNodeTypes else node.GetClassName() == t for t in self.nodeTypes)

    def nodes(self):
        if self._scene is None:
            return []
        candidates = (self._scene.GetNthNode(i) for i in range(self._scene.GetNumberOfNodes()))
        return [node for node in candidates if self._shows(node)]

    def nodeCount(self):
        return len(self.nodes())

    def _setCurrent(self, node):
        if node is self._current:
            return
        self._current = node
        self._sig("currentNodeChanged").emit(node)
        self._sig("currentNodeIDChanged").emit(node.GetID() if node is not None else "")

    def _onNodeRemoved(self, caller, event):
        if self._current is not None and not self._scene.IsNodePresent(self._current):
            remaining = self.nodes()
            self._setCurrent(None if (self.noneEnabled or not remaining) else remaining[-1])

    def setMRMLScene(self, scene):
        if scene is self._scene:
            return
        previousValid = self.nodeCount() > 0
        old = self._current
        for obj, tag in self._tags:
            obj.RemoveObserver(tag)
        self._tags = []
        self._scene = scene
        if scene is not None:
            self._tags.append((scene, scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)))
        if previousValid:
            self._setCurrent(old if self._shows(old) else None)
        else:
            wanted = self._requested if self._requested is not None else self._current
            self._setCurrent(wanted if self._shows(wanted) else None)
        self._requested = None
        self._enabled = scene is not None

    def mrmlScene(self):
        return self._scene

    def setCurrentNode(self, node):
        if self._scene is None:
            self._requested = node
        self._setCurrent(node if self._shows(node) else None)

    def setCurrentNodeID(self, nodeID):
        node = self._scene.GetNodeByID(nodeID) if (self._scene is not None and nodeID) else None
        self.setCurrentNode(node)

    def currentNode(self):
        return self._current

    def currentNodeID(self):
        return self._current.GetID() if self._current is not None else ""


class qMRMLTableView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._table = None
        self._scene = None

    def setMRMLTableNode(self, node):
        if node is not None and not node.IsA("vtkMRMLTableNode"):
            raise TypeError("setMRMLTableNode(vtkMRMLTableNode)")
        self._table = node

    def mrmlTableNode(self):
        return self._table

    def setMRMLScene(self, scene):
        self._scene = scene


# ---------------------------------------------------------------------------------------------- .ui loading
MRML_CLASSES = {"qMRMLWidget": qMRMLWidget, "qMRMLNodeComboBox": qMRMLNodeComboBox, "qMRMLTableView": qMRMLTableView}


def _lookupClass(name):
    if name in MRML_CLASSES:
        return MRML_CLASSES[name]
    cls = globals().get(name)
    if isinstance(cls, type) and (name.startswith("Q") or name.startswith("ctk")):
        return cls
    raise LookupError(f"the .ui uses {name}, which slicer_gui_fakes/fakeqt.py does not fake: add it there")


def _propertyValue(prop):
    value = prop[0]
    if value.tag == "string":
        return value.text or ""
    if value.tag == "bool":
        return value.text == "true"
    if value.tag == "number":
        return int(value.text)
    if value.tag == "double":
        return float(value.text)
    if value.tag == "stringlist":
        return [s.text or "" for s in value.findall("string")]
    return value.text  # enum, set, and anything the panel does not read back


class QUiLoader:
    def load(self, qfile, parent=None):
        root = ET.parse(qfile.path).getroot()
        widget = self._widget(root.find("widget"), None)
        byName = {w.name: w for w in [widget, *widget.findChildren()]}
        for connection in root.iter("connection"):
            sender = byName[connection.find("sender").text]
            receiver = byName[connection.find("receiver").text]
            slot = getattr(receiver, connection.find("slot").text.split("(")[0])
            sender.connect(connection.find("signal").text, slot)
        return widget

    def _widget(self, element, parent):
        widget = _lookupClass(element.get("class"))()
        widget.name = element.get("name")
        if parent is not None:
            widget.setParent(parent)
        for prop in element.findall("property"):
            value = _propertyValue(prop)
            if prop.get("stdset") == "0":
                widget.setProperty(prop.get("name"), value)
            else:
                setattr(widget, prop.get("name"), value)
        for item in element.findall("item"):
            text = item.find("property[@name='text']")
            widget.addItem(_propertyValue(text) if text is not None else "")
        for child in element:
            if child.tag == "layout":
                self._layout(child, widget, widget)
            elif child.tag == "widget":
                self._widget(child, widget)
        return widget

    def _layout(self, element, owner, parentObj):
        layout = _lookupClass(element.get("class"))()
        layout.name = element.get("name")
        if parentObj is owner:
            owner._layout = layout
        layout.setParent(parentObj)
        for item in element.findall("item"):
            for sub in item:
                if sub.tag == "widget":
                    layout._items.append(self._widget(sub, owner))
                elif sub.tag == "layout":
                    self._layout(sub, owner, layout)
        return layout


# ---------------------------------------------------------------------------------------------- modules
qt = types.ModuleType("qt", "Fake qt module (slicer_gui_fakes)")
ctk = types.ModuleType("ctk", "Fake ctk module (slicer_gui_fakes)")
for _name, _obj in list(globals().items()):
    if isinstance(_obj, type) and _name.startswith("Q"):
        setattr(qt, _name, _obj)
    elif isinstance(_obj, type) and _name.startswith("ctk"):
        setattr(ctk, _name, _obj)
qt.Qt = Qt
