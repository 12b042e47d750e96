"""Scalp geometry on a head mask: surface points, inward normals, and EEG 10-10 positions (RAS, mm).

Used to place a TMS coil: the coil centre sits above a scalp point, its +z axis along the inward normal
(see :mod:`CondNetLogic.coil` for the coil frame).  EEG positions follow the 10-20/10-10 proportional
scheme: points at fixed fractions of scalp arcs from nasion (Nz) to inion (Iz) over the vertex, from the
left to the right pre-auricular point (LPA, RPA) through Cz, around the head through Fpz, T7/T8 and Oz, and along
the frontal (F7-Fz-F8) and parietal (P7-Pz-P8) rows (Oostenveld & Praamstra, Clin. Neurophysiol. 112, 2001).

Handle angle (:func:`handle_direction`, :func:`handle_angle`): measured on the scalp's tangent plane from
the posterior direction, positive towards lateral (away from the midline), so that +45 degrees is the
usual motor-cortex orientation (handle posterior-lateral at 45 degrees to the midline) on either
hemisphere.  Seen from outside the head, positive angles turn the handle clockwise on the left
hemisphere and counter-clockwise on the right.  On the midline (outward normal within 5 degrees of the
mid-sagittal plane) the left-hemisphere sense is used: positive turns towards the subject's left.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping, Sequence, Union

import numpy as np

from .volume import Volume

__all__ = [
    "EEG_1010",
    "LANDMARK_ALIASES",
    "MIDLINE_SINE",
    "coil_axes",
    "eeg_position",
    "eeg_positions",
    "find_landmarks",
    "handle_angle",
    "handle_direction",
    "handle_towards",
    "head_centre",
    "lateral_sense",
    "nearest_scalp_point",
    "outer_head",
    "read_landmarks",
    "rotate_about",
    "scalp_normal",
    "scalp_point_along_ray",
    "scalp_points_around",
    "unit_vector",
]

#: 10-10 positions: (line, fraction of its arc).  ``coronal``: LPA -> Cz -> RPA; ``midline``: Nz -> Cz -> Iz;
#: ``left``/``right``: the half circumference Fpz -> T7/T8 -> Oz; ``frontal``/``parietal``: the row from F7/P7 over
#: Fz/Pz to F8/P8, each half (F7 to Fz, Fz to F8) divided in four.
EEG_1010 = {
    "T7": ("coronal", 0.1), "C5": ("coronal", 0.2), "C3": ("coronal", 0.3), "C1": ("coronal", 0.4),
    "Cz": ("coronal", 0.5), "C2": ("coronal", 0.6), "C4": ("coronal", 0.7), "C6": ("coronal", 0.8),
    "T8": ("coronal", 0.9), "Fpz": ("midline", 0.1), "AFz": ("midline", 0.2), "Fz": ("midline", 0.3),
    "FCz": ("midline", 0.4), "CPz": ("midline", 0.6), "Pz": ("midline", 0.7), "POz": ("midline", 0.8),
    "Oz": ("midline", 0.9),
    "Fp1": ("left", 0.1), "F7": ("left", 0.3), "P7": ("left", 0.7), "O1": ("left", 0.9),
    "Fp2": ("right", 0.1), "F8": ("right", 0.3), "P8": ("right", 0.7), "O2": ("right", 0.9),
    "F5": ("frontal", 0.125), "F3": ("frontal", 0.25), "F1": ("frontal", 0.375),
    "F2": ("frontal", 0.625), "F4": ("frontal", 0.75), "F6": ("frontal", 0.875),
    "P5": ("parietal", 0.125), "P3": ("parietal", 0.25), "P1": ("parietal", 0.375),
    "P2": ("parietal", 0.625), "P4": ("parietal", 0.75), "P6": ("parietal", 0.875),
}
#: Where the frontal and parietal rows meet the circumference and the midline (fractions of those arcs).
_ROWS = {"frontal": 0.3, "parietal": 0.7}
_STEP_MM = 0.5

#: Accepted labels for the four landmarks (compared case-insensitively).
LANDMARK_ALIASES = {
    "Nz": ("nz", "nasion", "na"),
    "Iz": ("iz", "inion", "in"),
    "LPA": ("lpa", "al", "left preauricular"),
    "RPA": ("rpa", "ar", "right preauricular"),
}

#: Outward normals whose left-right (R) component is below this (the sine of 5 degrees) are on the midline.
MIDLINE_SINE = float(np.sin(np.deg2rad(5.0)))


def unit_vector(vector, what: str) -> np.ndarray:
    """``vector`` (3,) scaled to length 1; ``what`` names it in the error.

    Raises
    ------
    ValueError
        If it has zero or non-finite length.
    """
    vector = np.asarray(vector, dtype=float).reshape(3)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"{what} has zero length")
    return vector / norm


def rotate_about(vector, axis, angle_deg: float) -> np.ndarray:
    """Rotate ``vector`` about ``axis`` by ``angle_deg`` (right-hand rule; Rodrigues' formula)."""
    vector = np.asarray(vector, dtype=float).reshape(3)
    axis = unit_vector(axis, "the rotation axis")
    angle = np.deg2rad(angle_deg)
    return (
        vector * np.cos(angle)
        + np.cross(axis, vector) * np.sin(angle)
        + axis * np.dot(axis, vector) * (1.0 - np.cos(angle))
    )


def coil_axes(normal_into_head, handle_hint=None) -> np.ndarray:
    """Orthonormal, right-handed coil axes (3, 3), columns x, y (handle), z (normal into the head).

    ``handle_hint`` is projected onto the plane normal to z.  Without a usable hint the handle points
    posterior (RAS (0, -1, 0)), or superior where the normal is (anti)parallel to that.
    """
    z = unit_vector(normal_into_head, "the coil normal")
    hints = [] if handle_hint is None else [np.asarray(handle_hint, dtype=float).reshape(3)]
    hints += [np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])]
    for hint in hints:
        y = hint - np.dot(hint, z) * z
        if np.linalg.norm(y) > 1e-3 * max(float(np.linalg.norm(hint)), 1e-12):
            y = y / np.linalg.norm(y)
            break
    return np.column_stack([np.cross(y, z), y, z])


def lateral_sense(normal_into_head) -> float:
    """Sense, about the outward normal (right-hand rule), in which positive handle angles turn the handle.

    +1 (counter-clockwise seen from outside) on the right hemisphere, where the outward normal points
    to the subject's right (+R); -1 (clockwise) on the left hemisphere and on the midline (see
    :data:`MIDLINE_SINE`).  Either way a positive angle turns the handle from posterior towards lateral.
    """
    outward = -unit_vector(normal_into_head, "the coil normal")
    return 1.0 if outward[0] > MIDLINE_SINE else -1.0


def handle_direction(normal_into_head, angle_deg: float) -> np.ndarray:
    """Unit handle direction (RAS) on the tangent plane: ``angle_deg`` from posterior, positive towards lateral."""
    z = unit_vector(normal_into_head, "the coil normal")
    reference = coil_axes(z)[:, 1]
    return rotate_about(reference, -z, lateral_sense(z) * float(angle_deg))


def handle_angle(normal_into_head, handle) -> float:
    """Angle (degrees, in (-180, 180]) of ``handle`` on the tangent plane; inverse of :func:`handle_direction`."""
    z = unit_vector(normal_into_head, "the coil normal")
    reference = coil_axes(z)[:, 1]
    handle = np.asarray(handle, dtype=float).reshape(3)
    counter_clockwise = np.degrees(np.arctan2(np.dot(np.cross(reference, handle), -z), np.dot(reference, handle)))
    angle = float(lateral_sense(z) * counter_clockwise)
    return angle + 360.0 if angle <= -180.0 else angle


def handle_towards(scalp_point, normal_into_head, handle_point) -> np.ndarray:
    """Unit handle direction (RAS) on the tangent plane at ``scalp_point``, towards ``handle_point`` (RAS mm): the
    direction from the scalp point to it with its component along the normal removed (SimNIBS ``pos_ydir``).

    Raises
    ------
    ValueError
        If ``handle_point`` is not finite or lies on the normal through ``scalp_point`` (its tangential offset is under
        1 % of its distance, about 0.6 degrees), where no handle direction follows from it.
    """
    z = unit_vector(normal_into_head, "the coil normal")
    offset = np.asarray(handle_point, dtype=float).reshape(3) - np.asarray(scalp_point, dtype=float).reshape(3)
    if not np.all(np.isfinite(offset)):
        raise ValueError(f"the handle point {np.asarray(handle_point).tolist()} is not finite")
    tangential = offset - np.dot(offset, z) * z
    length = np.linalg.norm(tangential)
    if not length > 0.01 * np.linalg.norm(offset):
        point, centre = (np.round(np.asarray(p, dtype=float), 2).tolist() for p in (handle_point, scalp_point))
        raise ValueError(f"the handle point {point} lies on the coil normal through the scalp point {centre}: give a "
                         "point to the side of the coil, where its handle should point")
    return tangential / length


def find_landmarks(labelled: Mapping[str, Sequence[float]]) -> Dict[str, np.ndarray]:
    """Pick ``Nz``, ``Iz``, ``LPA``, ``RPA`` out of ``{label: RAS point}`` (see :data:`LANDMARK_ALIASES`).

    Raises
    ------
    ValueError
        Naming the landmarks that are missing or not finite, or if they look mirrored (RPA not right of LPA or Nz
        not in front of Iz in RAS, as when LPS coordinates are read as RAS).
    """
    lookup = {
        str(label).strip().lower(): np.asarray(point, dtype=float).reshape(3) for label, point in labelled.items()
    }
    found = {}
    for name, aliases in LANDMARK_ALIASES.items():
        match = next((alias for alias in aliases if alias in lookup), None)
        if match is not None:
            found[name] = lookup[match]
    missing = [name for name in LANDMARK_ALIASES if name not in found]
    if missing:
        raise ValueError(
            f"EEG positions need landmarks labelled Nz, Iz, LPA and RPA; missing {', '.join(missing)} "
            f"(labels found: {', '.join(map(str, labelled)) or 'none'})"
        )
    bad = [name for name, point in found.items() if not np.all(np.isfinite(point))]
    if bad:
        raise ValueError(f"landmarks {', '.join(bad)} are not finite RAS points")
    wrong = [what for what, ok in (("RPA is not right of LPA", found["RPA"][0] > found["LPA"][0]),
                                   ("Nz is not in front of Iz", found["Nz"][1] > found["Iz"][1])) if not ok]
    if wrong:
        raise ValueError(f"the landmarks look mirrored or mislabelled: {' and '.join(wrong)} in RAS (R and A "
                         "increase to the right and to the front; were LPS coordinates read as RAS?)")
    return found


def read_landmarks(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """``Nz``, ``Iz``, ``LPA``, ``RPA`` (RAS mm) from a JSON file.

    Either a Slicer markups file (``.mrk.json``: the control points' labels and positions, in its
    ``coordinateSystem``, LPS by default since Slicer 5, converted here to RAS; unplaced points are left out), or
    ``{"landmarks": {label: [R, A, S]}}`` (as ``Resources/sample/*_landmarks.json``) or ``{label: [R, A, S]}``, in
    RAS mm.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not JSON, a point is not 3 numbers, the coordinate system is neither RAS nor LPS, or a landmark
        is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        labelled = {}
        if isinstance(data, dict) and isinstance(data.get("markups"), list):
            for markup in data["markups"]:
                system = str(markup.get("coordinateSystem", "LPS")).upper()
                if system not in ("RAS", "LPS"):
                    raise ValueError(f"coordinateSystem {system!r} is neither RAS nor LPS")
                flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
                for point in markup.get("controlPoints", []):
                    if point.get("positionStatus", "defined") == "undefined":  # listed but never placed
                        continue
                    labelled[point.get("label", "")] = flip * np.asarray(point["position"], dtype=float).reshape(3)
        elif isinstance(data, dict):
            labelled = data.get("landmarks", data)
        else:
            raise ValueError("expected a JSON object")
        return find_landmarks(labelled)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"{path}: no landmarks read ({err})") from None


def outer_head(mask: Volume) -> Volume:
    """The head of a mask: its largest 6-connected component with its enclosed cavities filled (bool Volume), for
    the scalp functions here.

    They take the outermost mask voxel along rays and the nearest outer voxel, so stray voxels outside the scalp
    catch them: a label map made into conductivity can hold such islands (on the shipped sample label map 128 of
    them, the largest 4,244 voxels, moved F3 by 28 mm and F8 by 30 mm).  An enclosed cavity (a sinus with no
    opening on the grid) would make its walls "outer" voxels, and :func:`nearest_scalp_point` stop there.  Pass
    the mask through this first.

    Raises
    ------
    ValueError
        If the mask is empty.
    """
    from ._resample import fill_holes, largest_component

    head = largest_component(np.asarray(mask.array) > 0)
    if not head.any():
        raise ValueError("the head mask is empty")
    return mask.with_array(fill_holes(head))


def _inside(mask: Volume, points_ras: np.ndarray) -> np.ndarray:
    """Nearest-voxel lookup of a boolean mask at RAS points (..., 3); outside the grid is False."""
    ijk = np.rint(mask.ras_to_ijk_points(points_ras)).astype(np.int64)
    shape = np.array(mask.shape)
    valid = np.all((ijk >= 0) & (ijk < shape), axis=-1)
    result = np.zeros(ijk.shape[:-1], dtype=bool)
    idx = ijk[valid]
    result[valid] = mask.array[idx[:, 0], idx[:, 1], idx[:, 2]] > 0
    return result


def head_centre(mask: Volume) -> np.ndarray:
    """Centroid of the head mask in RAS mm.

    Raises
    ------
    ValueError
        If the mask is empty.
    """
    ijk = np.argwhere(mask.array > 0)
    if len(ijk) == 0:
        raise ValueError("the head mask is empty")
    return mask.ijk_to_ras_points(ijk.mean(axis=0))


def _ray(mask: Volume, origin_ras, direction, max_distance_mm: float) -> tuple:
    """Samples ``origin + t * direction`` (t >= 0, 0.5 mm steps), RAS mm, and whether each is in the mask."""
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    t = np.arange(0.0, max_distance_mm, _STEP_MM)
    points = np.asarray(origin_ras, dtype=float) + t[:, np.newaxis] * direction
    inside = _inside(mask, points)
    if not inside.any():
        raise ValueError(f"the ray from {np.round(origin_ras, 1)} along {np.round(direction, 3)} misses the head")
    return points, inside


def scalp_point_along_ray(mask: Volume, origin_ras, direction, *, max_distance_mm: float = 300.0) -> np.ndarray:
    """Outermost head-mask point on the ray ``origin + t * direction`` (t >= 0), RAS mm.

    Outermost, so that a ray from deep in the head crosses air cavities open to the outside (sinuses, airways)
    and stops where a coil or an electrode would rest, an ear included.

    Raises
    ------
    ValueError
        If the ray never meets the mask.
    """
    points, inside = _ray(mask, origin_ras, direction, max_distance_mm)
    return points[np.flatnonzero(inside)[-1]]


def _first_exit(mask: Volume, origin_ras, direction, *, max_distance_mm: float = 300.0) -> np.ndarray:
    """The last mask point before the ray ``origin + t * direction`` first leaves the mask, RAS mm."""
    points, inside = _ray(mask, origin_ras, direction, max_distance_mm)
    entered = np.flatnonzero(inside)[0]
    left = np.flatnonzero(~inside[entered:])
    return points[entered + left[0] - 1] if len(left) else points[-1]


def nearest_scalp_point(mask: Volume, point_ras) -> np.ndarray:
    """The scalp point nearest to ``point_ras`` (e.g. a cortical target), RAS mm.

    The nearest outer head voxel (one with a face neighbour outside the mask) gives the direction; the point is
    where the ray from ``point_ras`` through that voxel first leaves the head (to 0.5 mm), so that a coil placed
    above it clears the staircase of a coarse grid, and an ear further along the ray does not catch it.  A point
    outside the head gets the nearest outer voxel.

    Raises
    ------
    ValueError
        If the mask is empty or the point is not 3 finite numbers.
    """
    from .evaluation import interior_of

    point = np.asarray(point_ras, dtype=float).reshape(-1)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ValueError(f"the point must be 3 finite numbers (RAS mm); got {point_ras}")
    inside = np.asarray(mask.array) > 0
    outer = inside & ~interior_of(inside)
    if not outer.any():
        raise ValueError("the head mask is empty")
    points = mask.ijk_to_ras_points(np.argwhere(outer))
    nearest = points[np.argmin(np.einsum("ij,ij->i", points - point, points - point))]
    if not _inside(mask, point[np.newaxis])[0]:
        return nearest
    direction = nearest - point
    if np.linalg.norm(direction) < 1e-9:  # the point is that voxel's centre: leave along the way from the centre
        direction = point - head_centre(mask)
    return _first_exit(mask, point, direction)


def scalp_points_around(mask: Volume, centre_ras, normal_into_head, radius_mm: float, step_mm: float) -> np.ndarray:
    """Scalp points around ``centre_ras`` (a scalp point): a square grid of ``step_mm`` on the tangent plane, within
    ``radius_mm`` of the centre, each moved along ``-normal_into_head`` onto the scalp; ``(N, 3)`` RAS mm, the
    centre first.  A coil-position search tries these (SimNIBS's TMS optimisation searches such a grid).

    Raises
    ------
    ValueError
        If the radius is negative or the step not positive, or a grid point's line misses the head.
    """
    if not (np.isfinite(radius_mm) and radius_mm >= 0.0 and np.isfinite(step_mm) and step_mm > 0.0):
        raise ValueError(f"the search radius must be >= 0 and the step > 0 (mm); got {radius_mm} and {step_mm}")
    n = unit_vector(normal_into_head, "the coil normal")
    axes = coil_axes(n)
    count = int(np.floor(radius_mm / step_mm + 1e-9))
    grid = np.arange(-count, count + 1) * step_mm
    offsets = [(0.0, 0.0)] + [(u, v) for u in grid for v in grid
                              if (u, v) != (0.0, 0.0) and u * u + v * v <= radius_mm**2 + 1e-9]
    centre = np.asarray(centre_ras, dtype=float)
    depth_mm = 2.0 * radius_mm + 20.0  # start inside the head, then leave it along -n
    return np.array([scalp_point_along_ray(mask, centre + u * axes[:, 0] + v * axes[:, 1] + depth_mm * n, -n)
                     for u, v in offsets])


def scalp_normal(mask: Volume, point_ras, *, radius_mm: float = 6.0) -> np.ndarray:
    """Unit inward normal (RAS) of the head surface near ``point_ras``.

    Estimated as the direction from the point to the centroid of the mask voxels within ``radius_mm``:
    on a smooth surface that centroid lies straight inside, and it is robust to the staircase.
    """
    point = np.asarray(point_ras, dtype=float)
    centre_ijk = np.rint(mask.ras_to_ijk_points(point)).astype(int)
    reach = np.ceil(radius_mm / mask.spacing).astype(int) + 1
    lo = np.maximum(centre_ijk - reach, 0)
    hi = np.minimum(centre_ijk + reach + 1, mask.shape)
    block = np.argwhere(mask.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] > 0) + lo
    points = mask.ijk_to_ras_points(block)
    near = points[np.linalg.norm(points - point, axis=1) <= radius_mm]
    if len(near) == 0:
        raise ValueError(f"no head voxels within {radius_mm} mm of {np.round(point, 1)}")
    inward = near.mean(axis=0) - point
    norm = np.linalg.norm(inward)
    if norm < 1e-6:
        raise ValueError(f"{np.round(point, 1)} is not on the head surface")
    return inward / norm


def _arc(mask: Volume, start, end, via_direction, n: int = 181) -> np.ndarray:
    """Scalp points (n, 3) from ``start`` to ``end`` over the side that ``via_direction`` points to."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    origin = 0.5 * (start + end)
    u = (start - origin) / np.linalg.norm(start - origin)
    v = np.asarray(via_direction, float) - np.dot(via_direction, u) * u
    v /= np.linalg.norm(v)
    angles = np.linspace(0.0, np.pi, n)
    return np.array([scalp_point_along_ray(mask, origin, np.cos(a) * u + np.sin(a) * v) for a in angles])


def _lengths(arc: np.ndarray) -> np.ndarray:
    """Length (mm) along ``arc`` from its start to each of its points."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(arc, axis=0), axis=1))])


def _at_length(arc: np.ndarray, lengths: np.ndarray, length: float) -> np.ndarray:
    return np.array([np.interp(length, lengths, arc[:, d]) for d in range(3)])


def _at_fraction(arc: np.ndarray, fraction: float) -> np.ndarray:
    lengths = _lengths(arc)
    return _at_length(arc, lengths, fraction * lengths[-1])


def eeg_position(name: str, landmarks: Mapping[str, np.ndarray], mask: Volume) -> np.ndarray:
    """RAS position (mm) of a 10-10 electrode on the scalp of ``mask`` (see :func:`eeg_positions`)."""
    return eeg_positions([name], landmarks, mask)[name]


def eeg_positions(names: Sequence[str], landmarks: Mapping[str, np.ndarray], mask: Volume) -> Dict[str, np.ndarray]:
    """RAS positions (mm) of 10-10 electrodes on the scalp of ``mask``; each scalp arc is traced once.

    Parameters
    ----------
    names : sequence of str
        Names in :data:`EEG_1010` (C3, Cz, Fz, F3, ...).
    landmarks : mapping
        ``Nz``, ``Iz``, ``LPA``, ``RPA`` as RAS points (mm).
    mask : Volume
        Head mask (non-zero inside the head), any orientation; pass it through :func:`outer_head` first.

    Notes
    -----
    Cz is the midpoint of the Nz-Iz arc, refined as the midpoint of the LPA-RPA arc through it; the coronal
    arc for C3/C4 runs LPA -> Cz -> RPA, the midline arc Nz -> Cz -> Iz.  "Up" is RAS +S, projected
    perpendicular to each arc's chord.  The half circumferences run from Fpz over T7 (T8) to Oz in the plane of
    those three points; a row (F7-Fz-F8, P7-Pz-P8) is the scalp in the plane of its three points, and F3 is
    halfway along it from F7 to Fz (Oostenveld & Praamstra 2001).  Each arc is the scalp seen along rays from the
    middle of its chord (F7-F8 for the frontal row), measured by its length.
    """
    unknown = [name for name in names if name not in EEG_1010]
    if unknown:
        raise ValueError(f"unknown 10-10 position {unknown[0]!r}; known: {', '.join(EEG_1010)}")
    missing = [key for key in ("Nz", "Iz", "LPA", "RPA") if key not in landmarks]
    if missing:
        raise ValueError(f"landmarks {missing} are missing; need Nz, Iz, LPA and RPA (RAS mm)")
    nz, iz, lpa, rpa = (np.asarray(landmarks[k], dtype=float) for k in ("Nz", "Iz", "LPA", "RPA"))
    cz = _at_fraction(_arc(mask, nz, iz, np.array([0.0, 0.0, 1.0])), 0.5)
    coronal = _arc(mask, lpa, rpa, cz - 0.5 * (lpa + rpa))
    cz = _at_fraction(coronal, 0.5)
    arcs = {"coronal": coronal}

    def line(kind: str) -> np.ndarray:  # each arc traced when first needed
        if kind not in arcs:
            if kind == "midline":
                arcs[kind] = _arc(mask, nz, iz, cz - 0.5 * (nz + iz))
            elif kind in ("left", "right"):  # the half circumference over T7 (0.1) or T8 (0.9)
                fpz, oz = _at_fraction(line("midline"), 0.1), _at_fraction(line("midline"), 0.9)
                t7 = _at_fraction(coronal, 0.1 if kind == "left" else 0.9)
                arcs[kind] = _arc(mask, fpz, oz, t7 - 0.5 * (fpz + oz))
            else:  # a row: rays from the middle of F7-F8 (deep in the head; from a shallow origin they would graze)
                row = _ROWS[kind]
                left, right = _at_fraction(line("left"), row), _at_fraction(line("right"), row)
                arcs[kind] = _arc(mask, left, right, _at_fraction(line("midline"), row) - 0.5 * (left + right), n=361)
        return arcs[kind]

    positions = {}
    for name in names:
        kind, fraction = EEG_1010[name]
        arc = line(kind)
        if kind not in _ROWS:
            positions[name] = _at_fraction(arc, fraction)
            continue
        lengths = _lengths(arc)
        middle = _at_fraction(line("midline"), _ROWS[kind])  # Fz (Pz), in the plane of the row
        to_middle = lengths[np.argmin(np.linalg.norm(arc - middle, axis=1))]
        along = 2.0 * fraction * to_middle if fraction < 0.5 else (
            to_middle + (2.0 * fraction - 1.0) * (lengths[-1] - to_middle))
        positions[name] = _at_length(arc, lengths, along)
    return positions
