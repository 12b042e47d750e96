"""Shared pytest fixtures.  ``mrml_scene`` imports slicer-core lazily, so tests that do not use it pay nothing."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_condnet_cache(tmp_path_factory):
    """Coil grids built by the tests go to a temporary folder, never to the user's ``~/.cache``."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CONDNET_CACHE_DIR", str(tmp_path_factory.mktemp("condnet_cache")))
    yield
    patch.undo()


@pytest.fixture
def mrml_scene():
    """A fresh MRML scene set up as the Slicer application does, installed as ``slicer.mrmlScene``.

    Application logic, colour logic (default colour nodes), markups logic, and the Red, Yellow and
    Green slice logics (each adds its slice node and slice composite node), as the app's startup and
    layout manager do.  Colour files (Viridis, Inferno) are absent without the application.
    """
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    vtk = pytest.importorskip("vtk")

    previous = getattr(slicer, "mrmlScene", None)
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
    for name in ("Red", "Yellow", "Green"):
        sliceLogic = slicer.vtkMRMLSliceLogic()
        sliceLogic.SetMRMLApplicationLogic(app)
        sliceLogic.SetMRMLScene(scene)
        sliceLogic.AddSliceNode(name)
        sliceLogics.AddItem(sliceLogic)
    app.SetSliceLogics(sliceLogics)
    slicer.mrmlScene = scene
    yield scene
    slicer.mrmlScene = previous
    app.SetSliceLogics(vtk.vtkCollection())
    scene.Clear(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module: on a shared 2-core machine two threads run several times slower."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
