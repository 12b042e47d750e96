"""E-field of the full pipeline (coil -> primary field -> SPFD solve) in a sphere, against analytic solutions.

A sphere of radius 95 mm, homogeneous or with three shells (82/88/95 mm; 0.33/0.01/0.465 S/m), under
(a) a magnetic dipole 300 mm from the centre (a coil of one dipole, as in SimNIBS's ``.ccd`` files) compared
with Heller & van Hulsteyn, and (b) the figure-8 coil 4 mm above the surface compared with the Poincare-gauge
quadrature (``analytic.wire_sphere_efield``).  Voxels within 3 voxels of the staircase surfaces are left
out.  Fast tests use 6 and 4 mm voxels with the SimNIBS bounds (RDM < 0.2, MAG < ln 1.1) and check that
the error falls with refinement; the 1 mm run with RDM < 0.05 and MAG < ln 1.05 is marked slow.
"""
from __future__ import annotations

import numpy as np
import pytest

from CondNetLogic.analytic import dipole_sphere_efield, wire_sphere_efield
from CondNetLogic.coil import Coil, coil_pose, load_coil
from CondNetLogic.efield import EFieldSimulation
from CondNetLogic.metrics import mag, rdm
from CondNetLogic.primary_field import PrimaryFieldGrid
from CondNetLogic.volume import Volume

RADIUS_MM = 95.0
SHELLS = ((82.0, 0.33), (88.0, 0.01), (95.0, 0.465))
DIDT = 1e8
N_ANALYTIC_POINTS = 2000


def _sphere(spacing_mm: float, shells: bool):
    n = int(np.ceil(2 * RADIUS_MM / spacing_mm)) + 3
    origin = -(n - 1) / 2 * spacing_mm
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1)
    radius = np.linalg.norm(ijk * spacing_mm + origin, axis=-1)
    sigma = np.zeros(radius.shape)
    for outer, value in (SHELLS[::-1] if shells else ((RADIUS_MM, 0.33),)):
        sigma[radius <= outer] = value
    return Volume.from_geometry(sigma, spacing=(spacing_mm,) * 3, origin=(origin,) * 3), radius


def _dipole_coil():
    moment_m2 = np.pi * 0.01**2  # the moment of a 10 mm loop per ampere, along the coil's +z
    coil = Coil.from_dict({"format_version": 1, "name": "dipole", "didt_max_a_per_s": DIDT,
                           "winding": {"type": "dipoles", "positions_mm": [[0.0, 0.0, 0.0]],
                                       "moments_m2": [[0.0, 0.0, moment_m2]]}})
    return coil, moment_m2


def _errors(spacing_mm: float, shells: bool, source: str, region_mm: float, grid=None) -> tuple:
    volume, radius = _sphere(spacing_mm, shells)
    simulation = EFieldSimulation(volume, device="cpu", tol=1e-8, grid=grid)
    if source == "figure8":
        coil = load_coil("figure8_70mm")
        pose = coil_pose([0.0, 0.0, RADIUS_MM], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0])
    else:
        coil, area_m2 = _dipole_coil()
        pose = coil_pose([0.0, 0.0, 300.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], scalp_offset_mm=0.0)
    result = simulation.solve(coil, pose, DIDT)
    inside = np.argwhere(radius < region_mm)
    if len(inside) > N_ANALYTIC_POINTS:
        inside = inside[np.random.default_rng(0).choice(len(inside), N_ANALYTIC_POINTS, replace=False)]
    points_m = volume.ijk_to_ras_points(inside) * 1e-3
    numeric = result.e_vector.array[tuple(inside.T)]
    if source == "figure8":
        exact = wire_sphere_efield(points_m, coil.segments_ras_mm(pose) * 1e-3, DIDT, n_quadrature=16)
    else:
        exact = dipole_sphere_efield(points_m, pose[:3, 3] * 1e-3, area_m2 * pose[:3, 2], DIDT)
    return rdm(numeric, exact), mag(numeric, exact)


@pytest.mark.parametrize("source", ["dipole", "figure8"])
def test_homogeneous_sphere_converges(source):
    coarse = _errors(6.0, False, source, region_mm=75.0)
    fine = _errors(4.0, False, source, region_mm=75.0)
    for rdm_value, mag_value in (coarse, fine):
        assert rdm_value < 0.2
        assert mag_value < np.log(1.1)
    assert fine[0] < coarse[0]


@pytest.mark.parametrize("source", ["dipole", "figure8"])
def test_three_shells_do_not_change_the_field(source):
    rdm_value, mag_value = _errors(6.0, True, source, region_mm=64.0)
    assert rdm_value < 0.2
    assert mag_value < np.log(1.1)


@pytest.fixture(scope="module")
def figure8_grid():
    """The default 2 mm coil-frame grid, built once for the 1 mm runs (their faces outnumber its nodes)."""
    return PrimaryFieldGrid(load_coil("figure8_70mm"))


@pytest.mark.slow
@pytest.mark.parametrize("shells", [False, True], ids=["homogeneous", "shells"])
@pytest.mark.parametrize("source", ["dipole", "figure8"])
def test_sphere_at_1mm(source, shells, request):
    grid = request.getfixturevalue("figure8_grid") if source == "figure8" else None
    rdm_value, mag_value = _errors(1.0, shells, source, region_mm=79.0 if shells else 92.0, grid=grid)
    print(f"1 mm sphere, {source}, shells={shells}: RDM {rdm_value:.4f}, MAG {mag_value:.4f}")
    assert rdm_value < 0.05
    assert mag_value < np.log(1.05)
