"""E-field-based TMS dosing: the stimulator output at which a target gets the field the motor threshold gives M1.

TMS intensity is usually set as a percentage of the resting motor threshold (MT), measured with the coil over the
motor hotspot.  The same output induces a different field at another target (the scalp-to-cortex distance and the
folding differ), so "120 % MT" over the dorsolateral prefrontal cortex can mean much more or much less than 120 %
of the field that reached threshold in M1.  E-field dosing scales the output instead so that the target gets the
motor threshold's field (times the wanted percentage); see Caulfield et al., Clin. Neurophysiol. 132(9),
2199-2207 (2021) and Numssen et al., "Electric-field-based dosing for TMS", Imaging Neuroscience 2 (2024).

The induced field is proportional to the coil's dI/dt (the conductivity problem is linear), so one simulation per
coil pose, at any dI/dt, is enough: :class:`RegionField` is the field strength in a region per A/s.
dI/dt is taken proportional to the stimulator output (percent of the coil's maximum dI/dt, SimNIBS ``dIdtmax``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

#: Statistics of |E| in a region that a dose may be matched on (keys of :func:`CondNetLogic.metrics.roi_stats`).
DOSE_METRICS = ("mean", "p95", "p99", "p99_9")
#: Relative rounding allowed above 100 % output before a dose counts as out of the stimulator's reach.
_OUTPUT_RTOL = 1e-9


@dataclass(frozen=True)
class RegionField:
    """|E| in a region (a statistic of it, V/m) from one simulation at ``didt`` (A/s).

    ``coil_sha256`` and ``didt_max`` (A/s at 100 % output; None when the coil file gives none) identify the coil
    and its stimulator; ``head`` identifies the conductivity (a file hash or a node id); ``notes`` collects what a
    dose from this field should report (an unconverged solve, ...).
    """

    e_v_per_m: float
    didt: float
    metric: str = "mean"
    coil_name: str = ""
    coil_sha256: str = ""
    didt_max: Optional[float] = None
    head: str = ""
    region: str = ""
    notes: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.metric not in DOSE_METRICS:
            raise ValueError(f"metric must be one of {DOSE_METRICS}, got {self.metric!r}")
        if not (math.isfinite(self.e_v_per_m) and self.e_v_per_m >= 0):
            raise ValueError(f"|E| must be a finite non-negative number of V/m, got {self.e_v_per_m}")
        if not (math.isfinite(self.didt) and self.didt != 0):
            raise ValueError(f"dI/dt must be a finite non-zero number of A/s, got {self.didt}")
        if self.didt_max is not None and not (math.isfinite(self.didt_max) and self.didt_max > 0):
            raise ValueError(f"the coil's maximum dI/dt must be positive (A/s), got {self.didt_max}")

    @property
    def per_didt(self) -> float:
        """|E| per unit dI/dt, V/m per A/s (the sign of dI/dt reverses E, not |E|)."""
        return self.e_v_per_m / abs(self.didt)

    def didt_at_percent(self, percent: float) -> float:
        """dI/dt (A/s) at ``percent`` of this coil's maximum output."""
        if self.didt_max is None:
            raise ValueError(f"coil {self.coil_name!r} gives no maximum dI/dt, so a stimulator output in percent "
                             "cannot be turned into dI/dt: give the motor threshold as dI/dt (A/s)")
        if not 0.0 < percent <= 100.0:
            raise ValueError(f"a stimulator output must be a percentage in (0, 100], got {percent}")
        return self.didt_max * percent / 100.0


@dataclass(frozen=True)
class Dose:
    """The motor-equivalent dose at a target (:func:`motor_equivalent_dose`).

    Attributes
    ----------
    motor_threshold_e : float
        |E| in the motor region at the motor threshold, V/m.
    wanted_e : float
        |E| the target should get: ``percent_of_threshold_field`` % of ``motor_threshold_e``, V/m.
    didt : float
        dI/dt that gives the target ``wanted_e``, A/s.
    output_percent : float or None
        That dI/dt in percent of the target coil's maximum output (None when its file gives no maximum).
    percent_of_motor_threshold : float or None
        That output in percent of the motor threshold: defined only when both simulations used the same coil.
    target_e_at_same_percent : float
        |E| at the target at ``percent_of_threshold_field`` % of the motor threshold's dI/dt (the conventional
        dose), V/m; None for different coils.
    reachable : bool
        Whether the stimulator reaches ``didt`` (True when the coil gives no maximum).
    notes : list of str
        Caveats to show with the numbers.
    """

    motor_threshold_e: float
    wanted_e: float
    didt: float
    output_percent: Optional[float]
    percent_of_motor_threshold: Optional[float]
    target_e_at_same_percent: Optional[float]
    reachable: bool
    notes: List[str]

    def to_dict(self) -> dict:
        """JSON-ready dict (V/m, A/s, percent)."""
        return {
            "motor_threshold_e_v_per_m": self.motor_threshold_e,
            "wanted_e_v_per_m": self.wanted_e,
            "didt_a_per_s": self.didt,
            "output_percent_of_max": self.output_percent,
            "percent_of_motor_threshold": self.percent_of_motor_threshold,
            "target_e_at_same_percent_of_threshold_v_per_m": self.target_e_at_same_percent,
            "reachable": self.reachable,
            "notes": list(self.notes),
        }


def motor_equivalent_dose(
    motor: RegionField, threshold_didt: float, target: RegionField, percent_of_threshold_field: float = 100.0
) -> Dose:
    """The dI/dt at which ``target`` gets ``percent_of_threshold_field`` % of the field the motor threshold gives.

    Parameters
    ----------
    motor : RegionField
        |E| in the motor region (e.g. 5 mm around the hand knob) from a simulation with the coil at the hotspot.
    threshold_didt : float
        The motor threshold as dI/dt of the motor coil, A/s (:meth:`RegionField.didt_at_percent` turns a
        percentage of the stimulator's output into it).
    target : RegionField
        |E| in the target region from a simulation with the coil over the target; the same statistic and head.
    percent_of_threshold_field : float
        The field wanted at the target in percent of the motor threshold's field (100: motor-equivalent).

    Raises
    ------
    ValueError
        For different statistics or heads, a non-positive threshold or percentage, or a target without field.
    """
    if motor.metric != target.metric:
        raise ValueError(f"the motor and target fields are different statistics ({motor.metric} and "
                         f"{target.metric}): compare the same one")
    if motor.head != target.head:
        raise ValueError(f"the motor and target fields come from different conductivity maps ({motor.head} and "
                         f"{target.head}): the motor threshold belongs to one head, so simulate both coil poses "
                         "on the same conductivity")
    if not (math.isfinite(threshold_didt) and threshold_didt != 0):
        raise ValueError(f"the motor threshold must be a finite non-zero dI/dt (A/s), got {threshold_didt}")
    if not (math.isfinite(percent_of_threshold_field) and percent_of_threshold_field > 0):
        raise ValueError(f"the percentage of the motor threshold's field must be positive, got "
                         f"{percent_of_threshold_field}")
    if motor.e_v_per_m == 0:
        raise ValueError(f"the motor region gets no field ({motor.region}): check the motor simulation")
    if target.e_v_per_m == 0:
        raise ValueError(f"the target region gets no field ({target.region}): check the target simulation")
    threshold_e = motor.per_didt * abs(threshold_didt)
    wanted = threshold_e * percent_of_threshold_field / 100.0
    didt = wanted / target.per_didt
    same_coil = motor.coil_sha256 == target.coil_sha256  # the hash covers the coil's maximum dI/dt
    notes = [*motor.notes, *target.notes]
    if not same_coil:
        notes.append(f"the motor and target simulations used different coils ({motor.coil_name}, "
                     f"{target.coil_name}): the dose is given as output and dI/dt only, not in percent of the motor "
                     "threshold")
    output = None if target.didt_max is None else 100.0 * didt / target.didt_max
    # 100 % computed through a ratio may come out as 100.00000000000001: still the stimulator's maximum.
    reachable = output is None or output <= 100.0 * (1.0 + _OUTPUT_RTOL)
    if not reachable:
        notes.append(f"the stimulator cannot reach it: {output:.0f} % of its maximum output")
    return Dose(
        motor_threshold_e=threshold_e,
        wanted_e=wanted,
        didt=didt,
        output_percent=output,
        percent_of_motor_threshold=100.0 * didt / abs(threshold_didt) if same_coil else None,
        target_e_at_same_percent=(target.per_didt * abs(threshold_didt) * percent_of_threshold_field / 100.0
                                  if same_coil else None),
        reachable=reachable,
        notes=notes,
    )


def read_region_field(path: str | Path, metric: str = "mean") -> RegionField:
    """The ROI field of a ``condnet efield`` sidecar (``efield.json``): its ``stats.roi`` statistic at its dI/dt.

    Raises
    ------
    ValueError
        If the file is not an ``efield.json`` or has no ROI statistics (none of ``--target``, ``--roi-center`` and
        ``--roi-mask`` given).
    OSError
        If it cannot be read.
    """
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err}): give the efield.json that condnet efield wrote") from err
    try:
        return _region_field(summary, path, metric)
    except (KeyError, TypeError, AttributeError, ZeroDivisionError) as err:
        raise ValueError(f"{path} is not an efield.json written by condnet efield ({type(err).__name__}: {err})"
                         ) from err


def _number(value) -> float:
    """``value`` as a float; TypeError unless it is a JSON number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _region_field(summary: dict, path: Path, metric: str) -> RegionField:
    """:func:`read_region_field` on the parsed sidecar; KeyError, TypeError or AttributeError where it is malformed."""
    didt, coil, head = _number(summary["didt_a_per_s"]), summary["coil"], summary["conductivity"]["sha256"]
    solver, percent = summary["solver"], summary["didt_percent_of_coil_max"]
    roi = summary.get("stats", {}).get("roi")
    if roi is None:
        raise ValueError(f"{path} has no ROI statistics: run condnet efield with --target, --roi-center (e.g. the "
                         "hand knob for the motor hotspot) or --roi-mask")
    if not isinstance(roi, dict):
        raise TypeError(f"stats.roi is a {type(roi).__name__}, not an object")
    if metric not in roi:
        raise ValueError(f"{path}: its ROI statistics have no {metric!r}")
    notes = []
    if not solver.get("converged", True):
        notes.append(f"{path}: the solve stopped at a relative residual of {_number(solver.get('residual')):.2g}"
                     f" above its tolerance {solver.get('tol')}: the field is approximate")
    if "mask_file" in roi:
        labels = roi.get("labels")
        region = f"the ROI mask {Path(roi['mask_file']).name}" + (
            f" (labels {', '.join(str(v) for v in labels)})" if labels else "")
    else:
        centre = ", ".join(f"{_number(v):.1f}" for v in roi["center_ras_mm"])
        region = f"{_number(roi['radius_mm']):g} mm around RAS ({centre})"
    return RegionField(
        e_v_per_m=_number(roi[metric]),
        didt=didt,
        metric=metric,
        coil_name=str(coil["name"]),
        coil_sha256=str(coil["sha256"]),
        didt_max=None if percent is None else 100.0 * abs(didt) / abs(_number(percent)),  # dI/dt may be < 0
        head=head,
        region=region,
        notes=notes,
    )
