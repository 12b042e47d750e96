"""``condnet efield``: TMS E-field of a coil over the head, written beside a JSON sidecar.

Example::

    condnet efield --conductivity sigma.nii.gz --coil-center -40 -15 70 --coil-direction 0 1 0 --out run1

writes ``run1/efield.nii.gz`` (vector, V/m, RAS components), ``run1/efield_magnitude.nii.gz`` (V/m) and
``run1/efield.json`` on the conductivity's grid.  Existing outputs are kept unless ``--overwrite``.  The same pose
again, or one exported by the Slicer panel (``coil_to_ras.txt``) or taken from SimNIBS (``matsimnibs``)::

    condnet efield --conductivity sigma.nii.gz --coil-matrix run1/efield.json --didt 5e7 --out run2

or at a 10-10 position found from the landmarks Nz, Iz, LPA and RPA (a Slicer point list), the handle at 45 degrees
posterior-lateral (the angle convention of :mod:`CondNetLogic.scalp`)::

    condnet efield --conductivity sigma.nii.gz --eeg-position C3 --landmarks fiducials.mrk.json --handle-angle 45 \\
        --out run3

or over a cortical target, trying handle angles 15 degrees apart and keeping the one with the strongest mean |E|
in the 5 mm ROI around the target (the operator is built once; each angle is one more solve)::

    condnet efield --conductivity sigma.nii.gz --target -38 -20 58 --handle-angles 0 15 30 45 60 75 90 105 120 135 \\
        150 165 --out run4

(an angle and the angle 180 degrees from it give the same |E| for a symmetric coil: the current is reversed).

How much the field depends on CondNet's uncertainty: the same pose on each slicing direction's conductivity
(``condnet predict --save-directions``), which writes ``efield_magnitude_sd.nii.gz`` beside the field of the
mean conductivity::

    condnet efield --conductivity sigma.nii.gz --target -38 -20 58 --handle-angle 45 --out run5 \
        --ensemble sigma_axial.nii.gz sigma_sagittal.nii.gz sigma_coronal.nii.gz
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ._roi_options import add_roi_mask_arguments, check_roi_label

HELP = "TMS E-field for one coil position on a conductivity volume (vector + |E| + JSON sidecar)"

OUTPUT_NAMES = ("efield.nii.gz", "efield_magnitude.nii.gz", "efield.json")
#: Written with ``--ensemble``.
ENSEMBLE_OUTPUT_NAME = "efield_magnitude_sd.nii.gz"
DEFAULT_ROI_RADIUS_MM = 5.0
DEFAULT_SEARCH_STEP_MM = 5.0

#: True relative residual that float32 solves are sure to reach (rounding of the float32 operator; measured
#: 7e-6 for a figure-8 coil over a 3 mm three-shell sphere, see ``PotentialSolver.solve``).
FLOAT32_TOL_FLOOR = 1e-5

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet efield`` (heavy modules are imported in :func:`run`, so ``--help`` is instant)."""
    parser.add_argument("--conductivity", required=True, type=Path, help="conductivity volume (S/m, isotropic)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--coil", default="figure8_70mm",
        help="coil name (condnet info lists them), coil JSON or SimNIBS .ccd/.tcd file",
    )
    parser.add_argument(
        "--coil-center", nargs=3, type=float, metavar=("R", "A", "S"),
        help="scalp point under the coil centre, RAS mm (or --eeg-position; or give --coil-matrix)",
    )
    parser.add_argument(
        "--eeg-position", metavar="NAME",
        help="instead of --coil-center: a 10-10 position on the scalp (C3, Cz, Fz, F3, ...; needs --landmarks)",
    )
    parser.add_argument(
        "--target", nargs=3, type=float, metavar=("R", "A", "S"),
        help="instead of --coil-center: a cortical target, RAS mm; the coil goes on the scalp point nearest to it, "
             "and the sidecar's ROI statistics are taken around it (unless --roi-center says otherwise)",
    )
    parser.add_argument(
        "--landmarks", type=Path, metavar="FILE",
        help="Nz, Iz, LPA, RPA for --eeg-position: a Slicer markups .mrk.json (LPS or RAS) or JSON of RAS points",
    )
    parser.add_argument(
        "--coil-direction", nargs=3, type=float, metavar=("R", "A", "S"),
        help="handle direction (coil +y), RAS; made orthogonal to the normal (or --handle-angle)",
    )
    parser.add_argument(
        "--handle-angle", type=float, metavar="DEG",
        help="instead of --coil-direction: handle angle on the scalp, 0 = posterior, positive towards lateral "
             "(45: the usual motor-cortex orientation on either hemisphere)",
    )
    parser.add_argument(
        "--handle-point", nargs=3, type=float, metavar=("R", "A", "S"),
        help="instead of --coil-direction: a point the handle points towards, RAS mm (SimNIBS pos_ydir); the handle "
             "runs from the coil's scalp point towards it, made orthogonal to the normal",
    )
    parser.add_argument(
        "--handle-angles", nargs="+", type=float, metavar="DEG",
        help="instead of --handle-angle: try each angle (e.g. 0 15 30 ... 165) and keep the one with the highest mean "
             "|E| in the ROI (--target, --roi-center or --roi-mask); the sidecar lists every angle's ROI statistics",
    )
    parser.add_argument(
        "--search-radius", type=float, metavar="MM",
        help="also try coil centres on the scalp within MM of the centre (a grid of --search-step on the tangent "
             "plane, each with its scalp normal) and keep the pose with the highest mean |E| in the ROI",
    )
    parser.add_argument("--search-step", type=float, metavar="MM",
                        help=f"grid step of --search-radius, mm (default {DEFAULT_SEARCH_STEP_MM:g})")
    parser.add_argument(
        "--normal", nargs=3, type=float, metavar=("R", "A", "S"),
        help="coil normal pointing into the head, RAS (default: the scalp's inward normal at --coil-center, or the "
             "direction towards the head centre when the point is not on the scalp)",
    )
    parser.add_argument("--scalp-offset", type=float, help="scalp to winding plane, mm (default 4)")
    parser.add_argument(
        "--coil-matrix", type=Path, metavar="FILE",
        help="the whole coil pose instead of --coil-center/--coil-direction: a 4x4 coil frame -> RAS matrix (mm) "
             "as text (the Slicer panel's coil_to_ras.txt), or JSON (an efield.json, or SimNIBS's matsimnibs)",
    )
    strength = parser.add_mutually_exclusive_group()
    strength.add_argument("--didt", type=float, help="current slope dI/dt, A/s (default: the coil's maximum output)")
    strength.add_argument(
        "--mso", type=float, metavar="PERCENT",
        help="stimulator output in %% of its maximum: dI/dt = PERCENT/100 x the coil file's maximum dI/dt",
    )
    parser.add_argument("--tol", type=float, default=1e-6, help="relative residual of the solver (default 1e-6)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="solver device")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="solver precision")
    parser.add_argument("--compile", action="store_true",
                        help="GPU only: compile the multigrid kernels with torch.compile (about 10 s once, then "
                             "faster solves)")
    parser.add_argument(
        "--primary-field", choices=("auto", "direct", "grid"), default="auto",
        help="dA/dt evaluation: exact at every face, or resampled from a coil-frame grid (default auto)",
    )
    parser.add_argument(
        "--grid", type=Path,
        help="coil-grid cache (.npz): loaded when it exists, else built and saved there (implies the grid mode)",
    )
    parser.add_argument(
        "--roi-center", nargs=3, type=float, metavar=("R", "A", "S"),
        help="centre of a spherical ROI for the sidecar statistics, subject RAS mm (e.g. the hand knob)",
    )
    parser.add_argument("--roi-radius", type=float,
                        help=f"radius of the ROI sphere around --roi-center or --target, mm (default "
                             f"{DEFAULT_ROI_RADIUS_MM:g})")
    add_roi_mask_arguments(parser, "instead of the spherical ROI (only its conducting voxels count)")
    parser.add_argument(
        "--ensemble", nargs="+", type=Path, metavar="FILE",
        help="two or more conductivity maps of the same head on the same grid (e.g. condnet predict "
             "--save-directions: sigma_axial/_sagittal/_coronal): solve the same pose on each and write "
             "efield_magnitude_sd.nii.gz (sd of |E| across them, V/m) and their head and ROI statistics",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def check_pose_options(args: argparse.Namespace) -> None:
    """The coil pose is ``--coil-matrix``, or a centre (``--coil-center`` or ``--eeg-position`` with ``--landmarks``)
    and a handle (``--coil-direction`` or ``--handle-angle``); the ROI a sphere or ``--roi-mask``; anything else raises
    ``ValueError`` naming the options.
    """
    if args.roi_mask is not None and args.roi_center is not None:
        raise ValueError("give one ROI: --roi-center (a sphere of --roi-radius) or --roi-mask")
    if args.roi_mask is not None and args.roi_radius is not None:
        raise ValueError("--roi-radius sizes the sphere around --roi-center or --target: drop it with --roi-mask")
    if args.search_step is not None and args.search_radius is None:
        raise ValueError("--search-step is the grid step of --search-radius: give --search-radius too")
    args.roi_radius = DEFAULT_ROI_RADIUS_MM if args.roi_radius is None else args.roi_radius
    args.search_step = DEFAULT_SEARCH_STEP_MM if args.search_step is None else args.search_step
    check_roi_label(args)
    given = {flag: value is not None for flag, value in (
        ("--coil-center", args.coil_center), ("--eeg-position", args.eeg_position), ("--target", args.target),
        ("--landmarks", args.landmarks),
        ("--coil-direction", args.coil_direction), ("--handle-angle", args.handle_angle),
        ("--handle-point", args.handle_point), ("--handle-angles", args.handle_angles),
        ("--search-radius", args.search_radius), ("--normal", args.normal),
        ("--scalp-offset", args.scalp_offset))}
    if args.coil_matrix is not None:
        if any(given.values()):
            dropped = ", ".join(flag for flag, present in given.items() if present)
            raise ValueError(f"--coil-matrix is the whole coil pose: drop {dropped}")
        return
    for options in (("--coil-center", "--eeg-position", "--target"),
                    ("--coil-direction", "--handle-angle", "--handle-point", "--handle-angles")):
        chosen = [flag for flag in options if given[flag]]
        if len(chosen) > 1:
            raise ValueError(f"give one of {', '.join(options)}; got {', '.join(chosen)}")
        if not chosen:
            raise ValueError("give the coil pose: --coil-center (or --eeg-position with --landmarks, or --target) and "
                             "--coil-direction (or --handle-angle, --handle-point or --handle-angles), or "
                             "--coil-matrix FILE")
    if given["--eeg-position"] != given["--landmarks"]:
        raise ValueError("--eeg-position and --landmarks go together (the 10-10 positions are found from Nz, Iz, LPA "
                         "and RPA)")
    if args.handle_angles is not None:
        angles = args.handle_angles
        if (len(angles) < 2 or not all(abs(a) < float("inf") for a in angles)
                or len({round(a % 360.0, 9) % 360.0 for a in angles}) < len(angles)):
            raise ValueError(f"--handle-angles needs two or more different finite angles (modulo 360); got {angles}")
    searching = [flag for flag in ("--handle-angles", "--search-radius") if given[flag]]
    if searching and args.target is None and args.roi_center is None and args.roi_mask is None:
        raise ValueError(f"{' and '.join(searching)} keep the pose with the highest mean |E| in the ROI: give "
                         "--target, --roi-center or --roi-mask")
    if args.search_radius is not None:
        if not (0.0 < args.search_radius < float("inf") and 0.0 < args.search_step < float("inf")):
            raise ValueError(f"--search-radius and --search-step must be positive (mm); got {args.search_radius} and "
                             f"{args.search_step}")
        if args.normal is not None:
            raise ValueError("--search-radius takes the scalp normal at each searched centre: drop --normal")
    from ..scalp import EEG_1010

    if args.eeg_position is not None and args.eeg_position not in EEG_1010:
        raise ValueError(f"--eeg-position {args.eeg_position!r} is not a known 10-10 position; known: "
                         f"{', '.join(EEG_1010)}")


def stimulus_didt(coil, didt=None, mso_percent=None) -> float:
    """dI/dt (A/s) from ``--didt`` (A/s) or ``--mso`` (percent of the coil file's maximum); default: the maximum.

    The maximum is the coil file's ``didt_max_a_per_s`` (SimNIBS ``dIdtmax``), the dI/dt of its stimulator at
    100 % output; dI/dt is taken proportional to the output (the stimulator's capacitor voltage).  A coil whose
    file gives no maximum needs ``--didt``.
    """
    if didt is not None and not (abs(didt) < float("inf") and didt != 0.0):
        raise ValueError(f"--didt must be a finite, non-zero current slope in A/s (negative reverses the current); "
                         f"got {didt}")
    if coil.didt_max is None and (didt is None or mso_percent is not None):
        raise ValueError(f"coil {coil.name!r} gives no maximum dI/dt (its file has no dIdtmax / maxdIdt), so "
                         f"{'--mso' if mso_percent is not None else 'the default of 100 % output'} cannot be "
                         "used: pass --didt in A/s (e.g. --didt 1e8 for 100 A/us)")
    if mso_percent is not None:
        if not 0.0 < mso_percent <= 100.0:
            raise ValueError(f"--mso must be a percentage in (0, 100]; got {mso_percent}")
        return coil.didt_max * mso_percent / 100.0
    if didt is None:
        return coil.didt_max
    if coil.didt_max is None:
        return float(didt)
    percent = 100.0 * abs(didt) / coil.didt_max
    if percent > 100.0:
        logger.warning("--didt %.4g A/s is %.0f %% of the maximum of coil %s (%.4g A/s)", didt, percent, coil.name,
                       coil.didt_max)
    elif 0.0 < percent < 0.1:
        logger.warning("--didt %.4g A/s is %.2g %% of the maximum of coil %s (%.4g A/s): --didt is in A/s (did you "
                       "mean %.4g A/us, i.e. --didt %.4g?)", didt, percent, coil.name, coil.didt_max, didt, didt * 1e6)
    return float(didt)


def default_normal(head, center_ras):
    """Coil normal into the head (RAS unit vector) at ``center_ras`` when ``--normal`` is not given.

    The scalp's inward normal (:func:`~CondNetLogic.scalp.scalp_normal`) when the point lies on the scalp,
    else the direction from the point to the head's centroid.
    """
    import numpy as np

    from ..scalp import head_centre, scalp_normal

    try:
        return scalp_normal(head, center_ras)
    except ValueError as err:
        logger.warning("--coil-center is not on the scalp (%s): the coil normal points at the head centre; check "
                       "the coordinates (RAS mm, the scalp point under the coil centre)", err)
    normal = head_centre(head) - np.asarray(center_ras, dtype=float)
    if np.linalg.norm(normal) == 0:
        raise ValueError("--coil-center is the head centre; give --normal explicitly")
    return normal / np.linalg.norm(normal)


def run(args: argparse.Namespace) -> int:
    """Run one simulation and write the outputs; returns the exit status."""
    import numpy as np

    from .. import __version__
    from ..coil import DEFAULT_SCALP_OFFSET_MM, coil_file, load_coil, read_coil_to_ras
    from ..efield import (
        EFieldSimulation,
        check_wire_outside,
        ensemble_spread,
        search_poses,
        strongest_pose,
        validate_conductivity,
    )
    from ..io import check_outputs, file_sha256, read_volume, removed_on_error, write_text, write_volume
    from ..metrics import mask_roi, roi_stats, spherical_roi
    from ..primary_field import PrimaryFieldGrid, default_cache_dir
    from ..scalp import (eeg_position, handle_angle, handle_direction, handle_towards, nearest_scalp_point, outer_head,
                         read_landmarks)
    from ._progress import ProgressBar

    if args.dtype == "float32" and args.tol < FLOAT32_TOL_FLOOR:
        logger.warning("--dtype float32 reaches a true relative residual of about %g at best; --tol %g is tighter "
                       "than that (use float64 for a tighter solve)", FLOAT32_TOL_FLOOR, args.tol)
    check_pose_options(args)
    # An earlier --ensemble run's sd of |E| would not belong to this field: it counts as an output to replace.
    with_sd = args.ensemble is not None or (args.out / ENSEMBLE_OUTPUT_NAME).exists()
    outputs = [args.out / name for name in OUTPUT_NAMES + ((ENSEMBLE_OUTPUT_NAME,) if with_sd else ())]
    check_outputs(outputs, overwrite=args.overwrite)  # before the work: existing files, unwritable folders
    if args.grid is not None and args.grid.suffix != ".npz":
        raise ValueError(f"--grid {args.grid}: coil-grid files end in .npz")
    if args.ensemble is not None and len(args.ensemble) < 2:
        raise ValueError(f"--ensemble needs at least two conductivity maps; got {len(args.ensemble)}")
    # bad files fail before the conductivity is read
    matrix = None if args.coil_matrix is None else read_coil_to_ras(args.coil_matrix)
    landmarks = None if args.landmarks is None else read_landmarks(args.landmarks)
    roi_mask = None if args.roi_mask is None else read_volume(args.roi_mask)
    path = coil_file(args.coil)
    coil = load_coil(path)
    didt = stimulus_didt(coil, args.didt, args.mso)
    conductivity = read_volume(args.conductivity)
    conducting = conductivity.with_array(validate_conductivity(conductivity) > 0)
    members = [read_volume(member) for member in args.ensemble or ()]
    for member_path, member in zip(args.ensemble or (), members):  # before any solve
        if not member.same_grid(conductivity):
            raise ValueError(f"--ensemble {member_path} is not on the grid of {args.conductivity}: resample it "
                             "first (condnet resample)")
        validate_conductivity(member)
    if matrix is not None:
        poses = [matrix]
        placement = {"coil_matrix_file": str(args.coil_matrix)}
    else:
        head = outer_head(conducting)  # where the coil goes: without stray voxels outside the scalp
        if args.eeg_position is not None:
            center = eeg_position(args.eeg_position, landmarks, head)
        elif args.target is not None:
            center = nearest_scalp_point(head, args.target)
        else:
            center = np.asarray(args.coil_center, dtype=float)
        normal = default_normal(head, center) if args.normal is None else np.asarray(args.normal, dtype=float)
        offset = DEFAULT_SCALP_OFFSET_MM if args.scalp_offset is None else args.scalp_offset

        def handles(point, point_normal):
            if args.handle_angles is not None:
                return [handle_direction(point_normal, angle) for angle in args.handle_angles]
            if args.handle_angle is not None:
                return [handle_direction(point_normal, args.handle_angle)]
            if args.handle_point is not None:
                return [handle_towards(point, point_normal, args.handle_point)]
            return [args.coil_direction]

        poses, scalp_points = search_poses(head, center, normal, handles, radius_mm=args.search_radius or 0.0,
                                           step_mm=args.search_step, scalp_offset_mm=offset)
        placement = {"coil_center_scalp_ras_mm": center.tolist(), "scalp_offset_mm": offset}
        if args.eeg_position is not None:
            placement.update(eeg_position=args.eeg_position, landmarks_file=str(args.landmarks))
        if args.target is not None:
            placement.update(target_ras_mm=list(args.target))
        if args.handle_point is not None:
            placement.update(handle_point_ras_mm=list(args.handle_point))
    for pose in poses:  # before the solver is built
        try:
            check_wire_outside(coil, pose, conducting)
        except ValueError as err:
            if len(poses) == 1:
                raise
            raise ValueError(f"at the searched pose with its centre at RAS {np.round(pose[:3, 3], 1).tolist()} and "
                             f"handle angle {handle_angle(pose[:3, 2], pose[:3, 1]):.4g} deg: {err}") from None
    roi_center, roi = args.target if args.roi_center is None else args.roi_center, None
    if roi_mask is not None:  # checked before the solve too
        roi = mask_roi(roi_mask, conducting, args.roi_label) & conducting.array
        if not roi.any():
            raise ValueError(f"the ROI mask {args.roi_mask} holds no conducting voxel on the conductivity's grid")
    elif roi_center is not None:
        roi = spherical_roi(conducting, roi_center, args.roi_radius) & conducting.array
        if not roi.any():
            raise ValueError(f"the ROI at {list(roi_center)} (radius {args.roi_radius} mm) holds no conducting voxel")
    with ProgressBar("efield") as bar:
        grid = None
        if args.grid is not None:
            if args.grid.exists():
                grid = PrimaryFieldGrid.load(args.grid, coil)
            else:
                grid = PrimaryFieldGrid(coil, progress=bar.stage(0, 30))
                grid.save(args.grid)
                logger.info("saved the coil grid to %s", args.grid)
        simulation = EFieldSimulation(
            conductivity,
            device=args.device,
            tol=args.tol,
            dtype=np.dtype(args.dtype),
            compile=args.compile,
            primary_field="grid" if grid is not None else args.primary_field,
            grid=grid,
            grid_cache_dir=None if grid is not None else default_cache_dir(),
            progress=bar.stage(30, 40),
        )
        if len(poses) > 1:  # --handle-angles, --search-radius: keep the field of the strongest pose in the ROI
            best, result, rows = strongest_pose(simulation, coil, poses, didt, roi, progress=bar.stage(40, 100))
            sweep = [{"coil_center_scalp_ras_mm": point.tolist(),
                      "handle_angle_deg": round(handle_angle(pose[:3, 2], pose[:3, 1]), 6) + 0.0,  # no -0.0
                      "iterations": row.pop("iterations"), "roi": row}
                     for point, pose, row in zip(scalp_points, poses, rows)]
            placement["coil_center_scalp_ras_mm"] = sweep[best]["coil_center_scalp_ras_mm"]
        else:
            best, sweep = 0, []
            result = simulation.solve(coil, poses[0], didt, progress=bar.stage(40, 100 if not members else 60))
        pose = poses[best]
        if members:
            del simulation
            spread, member_rows = ensemble_spread(
                members, coil, pose, didt, like=conductivity, roi=roi, progress=bar.stage(60, 100),
                device=args.device, tol=args.tol, dtype=np.dtype(args.dtype), compile=args.compile,
                primary_field="grid" if grid is not None else args.primary_field, grid=grid,
                grid_cache_dir=None if grid is not None else default_cache_dir())
    summary = {
        "condnet_version": __version__,
        "conductivity": {"path": str(args.conductivity), "sha256": file_sha256(args.conductivity)},
        "coil": {"name": coil.name, "file": str(path), "file_sha256": file_sha256(path), "sha256": coil.sha256},
        "coil_to_ras": pose.tolist(),
        **placement,
        "normal_into_head_ras": pose[:3, 2].tolist(),
        "handle_direction_ras": pose[:3, 1].tolist(),
        "handle_angle_deg": handle_angle(pose[:3, 2], pose[:3, 1]),
        "didt_a_per_s": didt,
        "didt_percent_of_coil_max": None if coil.didt_max is None else 100.0 * didt / coil.didt_max,
        "solver": {
            key: result.info[key]
            for key in ("tol", "iterations", "residual", "true_residual", "converged", "device", "fallbacks",
                        "primary_field")
        },
        "dtype": args.dtype,
        "timings_s": result.info["timings"],
        "units": {"efield": "V/m", "components": "RAS"},
        "stats": {"head": roi_stats(result.e_magnitude)},
    }
    if sweep:
        summary["pose_search"] = {"criterion": "mean |E| in the ROI", "poses": sweep, "best": best}
    if roi is not None:
        region = ({"mask_file": str(args.roi_mask), "mask_sha256": file_sha256(args.roi_mask), "labels": args.roi_label}
                  if args.roi_mask is not None else {"center_ras_mm": list(roi_center), "radius_mm": args.roi_radius})
        summary["stats"]["roi"] = {**region, **roi_stats(result.e_magnitude, roi)}
    if members:
        summary["ensemble"] = ensemble_summary(args.ensemble, member_rows)
    with removed_on_error() as files:  # all outputs or none
        files.append(write_volume(result.e_vector, outputs[0], overwrite=args.overwrite, like=args.conductivity))
        files.append(write_volume(result.e_magnitude, outputs[1], overwrite=args.overwrite, like=args.conductivity))
        if members:
            files.append(write_volume(spread, outputs[3], overwrite=args.overwrite, like=args.conductivity))
        files.append(write_text(outputs[2], json.dumps(summary, indent=2) + "\n", overwrite=args.overwrite))
    if with_sd and not members:
        outputs[3].unlink()
        logger.warning("removed %s, left by an earlier --ensemble run: it does not belong to this field", outputs[3])
    for number, row in enumerate(sweep):
        where = "" if args.search_radius is None else (
            f"centre {', '.join(f'{v:.1f}' for v in row['coil_center_scalp_ras_mm'])}, ")
        print(f"{where}handle angle {row['handle_angle_deg']:g} deg: ROI mean |E| {row['roi']['mean']:.1f} V/m, "
              f"max {row['roi']['max']:.1f} V/m{'  <- kept' if number == best else ''}")
    head = summary["stats"]["head"]
    info = result.info
    status = "" if info["converged"] else (
        f" NOT CONVERGED (relative residual {info['residual']:.2g} > --tol {info['tol']:g}: the field is approximate)"
    )
    print(
        f"E-field: max {head['max']:.1f} V/m, 99.9th percentile {head['p99_9']:.1f} V/m, "
        f"{info['iterations']} iterations on {info['device']}{status}; wrote {args.out}"
    )
    if members:
        ensemble = summary["ensemble"]
        where, across = ("ROI mean", ensemble["roi_mean"]) if "roi_mean" in ensemble else ("99th percentile",
                                                                                            ensemble["head_p99"])
        print(f"ensemble of {len(members)}: {where} |E| {across['mean']:.1f} +- {across['sd']:.1f} V/m "
              f"(min {across['min']:.1f}, max {across['max']:.1f}); sd of |E| per voxel in {ENSEMBLE_OUTPUT_NAME}"
              + ("" if all(row["converged"] for row in member_rows) else "; NOT CONVERGED for some members"))
    return 0


def ensemble_summary(files, rows: list) -> dict:
    """The sidecar's ``ensemble``: each member's file and statistics, and mean, sd (ddof=0), min and max across the
    members of the head's 99th percentile of |E| and (with an ROI) of the ROI's mean |E| (V/m)."""
    from ..efield import ensemble_statistics
    from ..io import file_sha256

    return {
        "members": [{"path": str(path), "sha256": file_sha256(path), **row} for path, row in zip(files, rows)],
        **ensemble_statistics(rows),
        "magnitude_sd_file": ENSEMBLE_OUTPUT_NAME,
    }
