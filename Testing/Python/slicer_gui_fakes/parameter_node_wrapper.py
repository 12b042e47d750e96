"""A small STAND-IN for ``slicer.parameterNodeWrapper``, written for these tests.  It is NOT Slicer's implementation
(that lives in Slicer's Base/Python/slicer/parameterNodeWrapper and needs the real Qt); it models only what
CondNetSlicer.py's parameter node and panel use, following Slicer's documented behaviour:

* ``@parameterNodeWrapper`` turns a class of annotated fields into a wrapper: ``Wrapper(vtkMRMLScriptedModuleNode)``
  gives typed properties stored in that node.  Field types: MRML node classes (stored as node references with
  the field's name as role; default None), ``bool`` ("True"/"False"), ``int``, ``float``, ``str`` and
  ``pathlib.Path`` (parameter strings; default the value assigned in the class, else False / 0 / "" / Path()).
  Missing parameters are written with their defaults when a wrapper is made.
* ``Annotated[T, Choice([...])]`` and ``Annotated[T, WithinRange(lo, hi)]``: a value outside raises ValueError on
  assignment; a value of the wrong type raises TypeError.  Each assignment is one ModifiedEvent of the node
  (StartModify/EndModify), none when the stored text does not change.
* ``connectGui(ui)`` binds every widget of ``ui`` (the ``childWidgetVariables`` object, or a widget: its children)
  whose dynamic property ``SlicerParameterName`` names a field, both ways: the widget's change signal writes the
  field, the node's ModifiedEvent rewrites all bound widgets (the widgets' own signals are not re-applied to
  the node meanwhile).  It returns a tag for ``disconnectGui(tag)``.  Widget kinds: qMRMLNodeComboBox (node
  field; ``nodeTypes`` set to the field's class), QCheckBox (bool), QComboBox (Choice: items replaced by the
  choices), QDoubleSpinBox / ctkSliderWidget (float; range set from WithinRange), ctkPathLineEdit (Path).
  Other combinations raise TypeError, naming the widget.  (In Slicer releases affected by Slicer issue #7547,
  ``connectGui`` returns no tag, so ``disconnectGui`` leaves the widgets bound; this stand-in returns a tag.)
* ``AddObserver`` / ``RemoveObserver`` / ``StartModify`` / ``EndModify`` / ``Modified`` forward to the node.

Not modelled: value caching (every read goes to the node), parameter packs, lists/tuples/dicts/unions/enums,
``Default``/``Decimals``/``SingleStep``/``Minimum``/``Maximum``/``Exclude`` annotations, custom serializers or GUI
connectors, prefixes, ``connectParametersToGui``, ``getValue``/``setValue`` by dotted names, GUI creation, and the
exact order in which Slicer updates several widgets.  The GUI is refreshed by an observer of priority 1, so it runs
before the panel's own (priority 0) observers of the node, as in Slicer, where the wrapper's observers come first.
"""

import pathlib
import typing

import vtk

import slicer

__all__ = ["Choice", "WithinRange", "parameterNodeWrapper"]

NAME_PROPERTY = "SlicerParameterName"


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value!r} is not within [{self.minimum}, {self.maximum}]")


_TEXT_DEFAULTS = {bool: False, int: 0, float: 0.0, str: "", pathlib.Path: pathlib.Path()}


class _Field:
    def __init__(self, name, annotation, default):
        self.name = name
        self.validators = []
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extras = typing.get_args(annotation)
            self.validators = [extra for extra in extras if isinstance(extra, (Choice, WithinRange))]
        self.type = annotation
        self.isNode = isinstance(annotation, type) and issubclass(annotation, slicer.vtkMRMLNode)
        if not self.isNode and annotation not in _TEXT_DEFAULTS:
            raise TypeError(f"the parameterNodeWrapper stand-in does not support {name}: {annotation}")
        if default is _MISSING:
            default = None if self.isNode else _TEXT_DEFAULTS[annotation]
        self.default = default

    def choices(self):
        return next((v.choices for v in self.validators if isinstance(v, Choice)), None)

    def range(self):
        return next(((v.minimum, v.maximum) for v in self.validators if isinstance(v, WithinRange)), None)

    def isIn(self, node):
        return self.isNode or node.HasParameter(self.name)

    def read(self, node):
        if self.isNode:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.type is bool:
            return text == "True"
        return self.type(text)

    def check(self, value):
        if self.isNode:
            if value is not None and not isinstance(value, self.type):
                raise TypeError(f"{self.name} must be a {self.type.__name__} or None, not {type(value).__name__}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{self.name} must be a number, not {type(value).__name__}")
        elif self.type is pathlib.Path:
            if not isinstance(value, pathlib.PurePath):
                raise TypeError(f"{self.name} must be a pathlib.Path, not {type(value).__name__}")
        elif type(value) is not self.type:
            raise TypeError(f"{self.name} must be a {self.type.__name__}, not {type(value).__name__}")
        for validator in self.validators:
            validator.validate(value)

    def write(self, node, value):
        self.check(value)
        wasModifying = node.StartModify()
        try:
            if self.isNode:
                node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
            else:
                node.SetParameter(self.name, str(value))
        finally:
            node.EndModify(wasModifying)


_MISSING = object()


# ------------------------------------------------------------------------------------------ GUI bindings
class _Binding:
    """One widget bound to one field: ``signal`` (name of the widget's change signal), ``read()``, ``write(value)``."""

    def __init__(self, widget, field):
        import ctk
        import qt

        self.widget, self.field = widget, field
        kind = type(widget)
        if field.isNode and kind is slicer.qMRMLNodeComboBox:
            widget.nodeTypes = [field.type.__name__]
            self.signal, self.read, self.write = "currentNodeChanged", widget.currentNode, widget.setCurrentNode
        elif field.type is bool and kind is qt.QCheckBox:
            self.signal = "toggled"
            self.read = lambda: bool(widget.checked)
            self.write = lambda value: setattr(widget, "checked", value)
        elif field.choices() is not None and kind is qt.QComboBox:
            choices = field.choices()
            widget.clear()
            widget.addItems([str(choice) for choice in choices])
            self.signal = "currentIndexChanged"
            self.read = lambda: choices[widget.currentIndex]
            self.write = lambda value: setattr(widget, "currentIndex", choices.index(value))
        elif field.type is float and kind in (qt.QDoubleSpinBox, ctk.ctkSliderWidget):
            if field.range() is not None:
                widget.minimum, widget.maximum = field.range()
            self.signal = "valueChanged"
            self.read = lambda: float(widget.value)
            self.write = lambda value: setattr(widget, "value", value)
        elif field.type is pathlib.Path and kind is ctk.ctkPathLineEdit:
            self.signal = "currentPathChanged"
            self.read = lambda: pathlib.Path(widget.currentPath)
            self.write = lambda value: setattr(widget, "currentPath", str(value))
        else:
            raise TypeError(
                f"the parameterNodeWrapper stand-in cannot bind {kind.__name__} {widget.name!r} to "
                f"{field.name} ({field.type}); add that case to slicer_gui_fakes/parameter_node_wrapper.py"
            )


class _Gui:
    def __init__(self, wrapper, bindings):
        self.wrapper, self.bindings, self.updating = wrapper, bindings, False
        self.slots = []
        for binding in bindings:
            binding.write(wrapper._read(binding.field))

            def slot(*args, binding=binding):
                if not self.updating:
                    wrapper._write(binding.field, binding.read())

            getattr(binding.widget, binding.signal).connect(slot)
            self.slots.append((binding, slot))
        self.tag = wrapper.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, self.update, 1.0)

    def update(self, caller=None, event=None):
        if self.updating:
            return
        self.updating = True
        try:
            for binding in self.bindings:
                binding.write(self.wrapper._read(binding.field))
        finally:
            self.updating = False

    def disconnect(self):
        self.wrapper.parameterNode.RemoveObserver(self.tag)
        for binding, slot in self.slots:
            getattr(binding.widget, binding.signal).disconnect(slot)


# ------------------------------------------------------------------------------------------ the wrapper
class _WrapperBase:
    def __init__(self, parameterNode):
        if parameterNode is None:
            raise ValueError("a parameter node wrapper needs a vtkMRMLScriptedModuleNode")
        self.parameterNode = parameterNode
        self._guis = {}
        self._nextTag = 0
        for field in self._fields.values():
            if not field.isIn(parameterNode):
                field.write(parameterNode, field.default)

    def _read(self, field):
        return field.read(self.parameterNode)

    def _write(self, field, value):
        field.write(self.parameterNode, value)

    def connectGui(self, gui):
        if getattr(gui, "isWidgetType", lambda: False)():
            widgets = gui.findChildren()
        else:
            widgets = list(vars(gui).values())
        bindings = []
        for widget in widgets:
            name = widget.property(NAME_PROPERTY) if hasattr(widget, "property") else None
            if not name:
                continue
            if name not in self._fields:
                raise ValueError(f"widget {widget.name!r} is bound to {name!r}, which {type(self).__name__} lacks")
            bindings.append(_Binding(widget, self._fields[name]))
        tag, self._nextTag = self._nextTag, self._nextTag + 1
        self._guis[tag] = _Gui(self, bindings)
        return tag

    def disconnectGui(self, tag):
        gui = self._guis.pop(tag, None)
        if gui is not None:
            gui.disconnect()

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.parameterNode.RemoveObserver(tag)

    def StartModify(self):
        return self.parameterNode.StartModify()

    def EndModify(self, wasModifying):
        return self.parameterNode.EndModify(wasModifying)

    def Modified(self):
        self.parameterNode.Modified()


def _property(field):
    return property(lambda self: self._read(field), lambda self, value: self._write(field, value))


def parameterNodeWrapper(cls):
    """Class decorator: see the module docstring."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {name: _Field(name, annotation, cls.__dict__.get(name, _MISSING)) for name, annotation in hints.items()}
    namespace = {name: _property(field) for name, field in fields.items()}
    namespace.update(_fields=fields, __doc__=cls.__doc__, __module__=cls.__module__, __qualname__=cls.__qualname__)
    return type(cls.__name__, (_WrapperBase,), namespace)
