"""Coil placement for the Slicer module: snap a markup to the scalp, build the coil axes from a
markup's orientation, and find EEG 10-10 presets from labelled landmarks.

The surface geometry itself (ray casting, normals, 10-10 arcs) lives in :mod:`CondNetLogic.scalp`;
this module only adapts it to what the user handles in Slicer (a dragged point, a rotation handle,
control-point labels).  Pure numpy on RAS millimetres; runs without Slicer.

Coil frame (as in :mod:`CondNetLogic.coil`): origin at the coil centre, +z = normal pointing INTO the
head, +y = handle direction, +x = y cross z.  The coil markup's control point stores the same axes as
its orientation matrix (columns x, y, z), so rotating the point in a 3D view turns the handle.

Handle angle (:func:`handleDirection`, :func:`handleAngle`): measured on the scalp's tangent plane from
the posterior direction, positive towards lateral (away from the midline), so that +45 degrees is the
usual motor-cortex orientation (handle posterior-lateral at 45 degrees to the midline) on either
hemisphere.  Seen from outside the head, positive angles turn the handle clockwise on the left
hemisphere and counter-clockwise on the right.  On the midline (outward normal within 5 degrees of the
mid-sagittal plane) the left-hemisphere sense is used: positive turns towards the subject's left.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from CondNetLogic import scalp
from CondNetLogic.volume import Volume

__all__ = [
    "LANDMARK_ALIASES",
    "MIDLINE_SINE",
    "coilFrame",
    "eegPositions",
    "findLandmarks",
    "handleAngle",
    "handleDirection",
    "headMask",
    "lateralSense",
    "rotateAbout",
    "snapToScalp",
]

#: Accepted control-point labels for the four landmarks (compared case-insensitively).
LANDMARK_ALIASES = {
    "Nz": ("nz", "nasion", "na"),
    "Iz": ("iz", "inion", "in"),
    "LPA": ("lpa", "al", "left preauricular"),
    "RPA": ("rpa", "ar", "right preauricular"),
}

#: Outward normals whose left-right (R) component is below this (the sine of 5 degrees) are on the midline.
MIDLINE_SINE = float(np.sin(np.deg2rad(5.0)))


def _unit(vector, what: str) -> np.ndarray:
    vector = np.asarray(vector, dtype=float).reshape(3)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"{what} has zero length")
    return vector / norm


def headMask(conductivity: Volume, *, threshold: float = 0.0) -> Volume:
    """Boolean head mask: voxels whose conductivity (S/m) is above ``threshold``.

    Raises
    ------
    ValueError
        If the volume is not scalar or the mask is empty.
    """
    if conductivity.array.ndim != 3:
        raise ValueError(f"the head mask needs a scalar volume, got shape {conductivity.array.shape}")
    mask = np.asarray(conductivity.array) > threshold
    if not mask.any():
        raise ValueError("the conductivity is zero everywhere: there is no head to place the coil on")
    return conductivity.with_array(mask)


def snapToScalp(
    mask: Volume, pointRas, *, directionIntoHead=None, radiusMm: float = 6.0, iterations: int = 4
) -> Tuple[np.ndarray, np.ndarray]:
    """Move a point onto the scalp; return ``(scalpPointRas, normalIntoHead)`` (RAS mm, unit vector).

    The point may lie inside or outside the head.  The first cast is along ``directionIntoHead``
    (default: towards the head centroid); each following one along the surface normal at the previous
    hit, until the hit moves by less than half a voxel.  The scalp point is the outermost head voxel on
    the line through the point, on the side the point lies.

    Raises
    ------
    ValueError
        If the line misses the head.
    """
    point = np.asarray(pointRas, dtype=float).reshape(3)
    if directionIntoHead is None:
        directionIntoHead = scalp.head_centre(mask) - point
    direction = _unit(directionIntoHead, "the direction into the head")
    gridCentre = mask.ijk_to_ras_points((np.array(mask.shape) - 1) / 2.0)
    gridDiagonal = float(np.linalg.norm(np.array(mask.shape) * mask.spacing))
    # Far enough to start beyond the head on the far side, wherever the point is.
    reach = float(np.linalg.norm(point - gridCentre)) + gridDiagonal

    def cast(through: np.ndarray, inward: np.ndarray) -> np.ndarray:
        # March from beyond the head back out through ``through``: the last head voxel met is the
        # scalp on that side, whether ``through`` is inside or outside the head.
        return scalp.scalp_point_along_ray(mask, through + reach * inward, -inward, max_distance_mm=2.0 * reach)

    hit = cast(point, direction)
    normal = scalp.scalp_normal(mask, hit, radius_mm=radiusMm)
    tolerance = 0.5 * float(mask.spacing.min())
    for _ in range(iterations):
        newHit = cast(hit, normal)
        moved = float(np.linalg.norm(newHit - hit))
        hit = newHit
        normal = scalp.scalp_normal(mask, hit, radius_mm=radiusMm)
        if moved < tolerance:
            break
    return hit, normal


def rotateAbout(vector, axis, angleDeg: float) -> np.ndarray:
    """Rotate ``vector`` about ``axis`` by ``angleDeg`` (right-hand rule; Rodrigues' formula)."""
    vector = np.asarray(vector, dtype=float).reshape(3)
    axis = _unit(axis, "the rotation axis")
    angle = np.deg2rad(angleDeg)
    return (
        vector * np.cos(angle)
        + np.cross(axis, vector) * np.sin(angle)
        + axis * np.dot(axis, vector) * (1.0 - np.cos(angle))
    )


def coilFrame(normalIntoHead, handleHint=None) -> np.ndarray:
    """Orthonormal, right-handed coil axes (3, 3), columns x, y (handle), z (normal into the head).

    ``handleHint`` is projected onto the plane normal to z.  Without a usable hint the handle points
    posterior (RAS (0, -1, 0)), or superior where the normal is (anti)parallel to that.
    """
    z = _unit(normalIntoHead, "the coil normal")
    hints = [] if handleHint is None else [np.asarray(handleHint, dtype=float).reshape(3)]
    hints += [np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])]
    for hint in hints:
        y = hint - np.dot(hint, z) * z
        if np.linalg.norm(y) > 1e-3 * max(float(np.linalg.norm(hint)), 1e-12):
            y = y / np.linalg.norm(y)
            break
    return np.column_stack([np.cross(y, z), y, z])


def lateralSense(normalIntoHead) -> float:
    """Sense, about the outward normal (right-hand rule), in which positive handle angles turn the handle.

    +1 (counter-clockwise seen from outside) on the right hemisphere, where the outward normal points
    to the subject's right (+R); -1 (clockwise) on the left hemisphere and on the midline (see
    :data:`MIDLINE_SINE`).  Either way a positive angle turns the handle from posterior towards lateral.
    """
    outward = -_unit(normalIntoHead, "the coil normal")
    return 1.0 if outward[0] > MIDLINE_SINE else -1.0


def handleDirection(normalIntoHead, angleDeg: float) -> np.ndarray:
    """Unit handle direction on the tangent plane: ``angleDeg`` from posterior, positive towards lateral."""
    z = _unit(normalIntoHead, "the coil normal")
    reference = coilFrame(z)[:, 1]
    return rotateAbout(reference, -z, lateralSense(z) * float(angleDeg))


def handleAngle(normalIntoHead, handle) -> float:
    """Angle (degrees, in (-180, 180]) of ``handle`` on the tangent plane; inverse of :func:`handleDirection`."""
    z = _unit(normalIntoHead, "the coil normal")
    reference = coilFrame(z)[:, 1]
    handle = np.asarray(handle, dtype=float).reshape(3)
    counterClockwise = np.degrees(np.arctan2(np.dot(np.cross(reference, handle), -z), np.dot(reference, handle)))
    angle = float(lateralSense(z) * counterClockwise)
    return angle + 360.0 if angle <= -180.0 else angle


def findLandmarks(labelled: Dict[str, Sequence[float]]) -> Dict[str, np.ndarray]:
    """Pick ``Nz``, ``Iz``, ``LPA``, ``RPA`` out of ``{label: RAS point}`` (see :data:`LANDMARK_ALIASES`).

    Raises
    ------
    ValueError
        Naming the landmarks that are missing.
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
            f"EEG presets need control points labelled Nz, Iz, LPA and RPA; missing {', '.join(missing)} "
            f"(labels found: {', '.join(map(str, labelled)) or 'none'})"
        )
    return found


def eegPositions(
    mask: Volume, labelled: Dict[str, Sequence[float]], names: Optional[Sequence[str]] = None
) -> Dict[str, np.ndarray]:
    """Scalp positions (RAS mm) of 10-10 electrodes (default: all of :data:`CondNetLogic.scalp.EEG_1010_CENTRAL`)."""
    landmarks = findLandmarks(labelled)
    names = list(scalp.EEG_1010_CENTRAL) if names is None else list(names)
    return {name: scalp.eeg_position(name, landmarks, mask) for name in names}
