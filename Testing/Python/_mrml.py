"""A MRML scene set up as the Slicer application does; shared by ``conftest.py`` and the panel's fakes."""
from __future__ import annotations


def application_scene() -> tuple:
    """A new scene with the application's logics: ``(scene, application logic, markups logic, logics to keep)``.

    Application logic, colour logic (default colour nodes), markups logic, and the Red, Yellow and Green slice
    logics (each adds its slice node and slice composite node), as the app's startup and layout manager do.
    Colour files (Viridis, Inferno) are absent without the application.  Keep the returned logics alive while
    the scene is in use; nothing global (``slicer.mrmlScene``) is set here.
    """
    import vtk

    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(scene)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLApplicationLogic(app)
    markups.SetMRMLScene(scene)
    sliceLogics = vtk.vtkCollection()
    keep = [app, colors, markups, sliceLogics]
    for name in ("Red", "Yellow", "Green"):
        sliceLogic = slicer.vtkMRMLSliceLogic()
        sliceLogic.SetMRMLApplicationLogic(app)
        sliceLogic.SetMRMLScene(scene)
        sliceLogic.AddSliceNode(name)
        sliceLogics.AddItem(sliceLogic)
        keep.append(sliceLogic)
    app.SetSliceLogics(sliceLogics)
    return scene, app, markups, keep
