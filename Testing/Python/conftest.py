"""Shared pytest fixtures.  ``mrml_scene`` imports slicer-core lazily, so tests that do not use it pay nothing."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_condnet_cache(tmp_path_factory):
    """Coil grids built by the tests go to a temporary folder, never to the user's ``~/.cache``; the user's own
    coil folder (``~/.condnet/coils``) is replaced by an empty one."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CONDNET_CACHE_DIR", str(tmp_path_factory.mktemp("condnet_cache")))
    patch.setenv("CONDNET_COIL_DIR", str(tmp_path_factory.mktemp("condnet_coils")))
    yield
    patch.undo()


@pytest.fixture
def mrml_scene():
    """A fresh MRML scene set up as the Slicer application does (``_mrml.application_scene``), installed as
    ``slicer.mrmlScene``."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    vtk = pytest.importorskip("vtk")
    from _mrml import application_scene

    previous = getattr(slicer, "mrmlScene", None)
    scene, app, _, keep = application_scene()
    slicer.mrmlScene = scene
    yield scene
    slicer.mrmlScene = previous
    app.SetSliceLogics(vtk.vtkCollection())
    scene.Clear(1)
    del keep


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module: on a shared 2-core machine two threads run several times slower."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
