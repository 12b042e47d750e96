"""``condnet warmup`` compiles (or loads) every kernel an E-field solve uses, in a process of its own."""
import subprocess
import sys

from CondNetLogic.cli import main

CHECK = """
from CondNetLogic.commands.warmup import warm_up
warm_up()
from CondNetLogic import _primary_kernels as primary
from CondNetLogic.solver import _kernels as solver
kernels = {name: getattr(solver, name) for name in solver.__all__}
kernels.update(source_sum_lattice=primary.source_sum_lattice, resample_lattice=primary.resample_lattice)
from CondNetLogic import _mask_kernels as mask
kernels.update({name: getattr(mask, name) for name in ("count_runs", "find_runs", "join_runs", "component_sizes",
                                                         "paint_runs")})  # scalp.outer_head places the coil
print(sorted(name for name, kernel in kernels.items() if not kernel.signatures))
"""


def test_warm_up_leaves_no_e_field_kernel_uncompiled():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=600, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_warmup_command(capsys):
    assert main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert "solve, direct primary field" in out
    assert "E-field kernels ready in" in out
