"""``condnet dose``: the stimulator output at which a target gets the field the motor threshold gives M1.

Two ``condnet efield`` runs on the same conductivity, each with an ROI: the coil at the motor hotspot (ROI around
the hand knob) and the coil over the target (``--target``).  With the measured motor threshold::

    condnet efield --conductivity sigma.nii.gz --target -38 -20 58 --handle-angle 45 --out m1
    condnet efield --conductivity sigma.nii.gz --target -40 30 40 --handle-angle 45 --out dlpfc
    condnet dose --motor m1/efield.json --motor-threshold 45 --target dlpfc/efield.json --percent 120

prints the output (percent of the stimulator's maximum, and of the motor threshold) at which the target's mean
|E| is 120 % of the motor region's mean |E| at threshold (:mod:`CondNetLogic.dosing`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "E-field-based dose: output at a target matching the motor threshold's field at M1 (two efield runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet dose``."""
    from ..dosing import DOSE_METRICS

    parser.add_argument("--motor", required=True, type=Path, metavar="EFIELD_JSON",
                        help="efield.json of the coil at the motor hotspot, with an ROI (--target, --roi-center or "
                             "--roi-mask)")
    parser.add_argument("--target", required=True, type=Path, metavar="EFIELD_JSON",
                        help="efield.json of the coil over the target, with an ROI, on the same conductivity")
    threshold = parser.add_mutually_exclusive_group(required=True)
    threshold.add_argument("--motor-threshold", type=float, metavar="PERCENT",
                           help="measured motor threshold, percent of the stimulator's maximum output (with the "
                                "motor run's coil)")
    threshold.add_argument("--motor-threshold-didt", type=float, metavar="A_PER_S",
                           help="instead: the motor threshold as the coil's dI/dt, A/s")
    parser.add_argument("--percent", type=float, default=100.0,
                        help="field wanted at the target, percent of the motor threshold's field (default 100)")
    parser.add_argument("--metric", choices=DOSE_METRICS, default="mean",
                        help="statistic of |E| in each ROI that is matched (default mean)")
    parser.add_argument("--out", type=Path, metavar="JSON", help="also write the dose and its inputs here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    """Compute and print the dose; returns the exit status."""
    from .. import __version__
    from ..dosing import motor_equivalent_dose, read_region_field
    from ..io import check_outputs, write_text

    if args.out is not None:
        check_outputs([args.out], overwrite=args.overwrite)
    motor = read_region_field(args.motor, args.metric)
    target = read_region_field(args.target, args.metric)
    if args.motor_threshold is not None:
        threshold_didt = motor.didt_at_percent(args.motor_threshold)
    else:
        threshold_didt = args.motor_threshold_didt
    dose = motor_equivalent_dose(motor, threshold_didt, target, args.percent)
    name = "mean |E|" if args.metric == "mean" else f"{args.metric} of |E|"
    output = "" if args.motor_threshold is None else f"{args.motor_threshold:g} % output, "
    at = f"{output}dI/dt {abs(threshold_didt) / 1e6:.4g} A/us"
    print(f"motor threshold ({at}): {name} {dose.motor_threshold_e:.1f} V/m within {motor.region}")
    print(f"wanted at the target: {args.percent:g} % of that, {dose.wanted_e:.1f} V/m within {target.region}")
    line = f"dose: dI/dt {abs(dose.didt) / 1e6:.4g} A/us"
    if dose.output_percent is not None:
        line += f", {dose.output_percent:.1f} % of the stimulator's maximum output"
    if dose.percent_of_motor_threshold is not None:
        line += f", {dose.percent_of_motor_threshold:.1f} % of the motor threshold"
    print(line)
    if dose.target_e_at_same_percent is not None:
        print(f"(at {args.percent:g} % of the motor threshold the target would get {dose.target_e_at_same_percent:.1f}"
              f" V/m, {100.0 * dose.target_e_at_same_percent / dose.wanted_e:.0f} % of the wanted field)")
    for note in dose.notes:
        print(f"note: {note}")
    if args.out is not None:
        record = {
            "condnet_version": __version__,
            "motor": {"efield_json": str(args.motor), "region": motor.region, "e_v_per_m": motor.e_v_per_m,
                      "didt_a_per_s": motor.didt, "coil": motor.coil_name},
            "target": {"efield_json": str(args.target), "region": target.region, "e_v_per_m": target.e_v_per_m,
                       "didt_a_per_s": target.didt, "coil": target.coil_name},
            "metric": args.metric,
            "motor_threshold_percent_of_max": args.motor_threshold,
            "motor_threshold_didt_a_per_s": threshold_didt,
            "percent_of_threshold_field": args.percent,
            "dose": dose.to_dict(),
        }
        write_text(args.out, json.dumps(record, indent=2) + "\n", overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0
