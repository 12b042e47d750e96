"""The package's public surface: lazy names resolve, and importing it loads no heavy library."""
import subprocess
import sys

import pytest

import CondNetLogic


@pytest.mark.parametrize("name", CondNetLogic.__all__)
def test_every_public_name_resolves(name):
    assert getattr(CondNetLogic, name) is not None


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no_such_name"):
        CondNetLogic.no_such_name  # noqa: B018


def test_import_is_light():
    code = (
        "import sys, CondNetLogic, CondNetLogic.cli, CondNetLogic.solver; "
        "heavy = [m for m in ('torch', 'numba', 'scipy', 'SimpleITK', 'slicer', 'vtk', 'qt') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
