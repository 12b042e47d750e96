"""Coil placement for the Slicer module: snap a markup to the scalp, build the coil axes from a
markup's orientation, and find EEG 10-10 presets from labelled landmarks.

The surface geometry itself (ray casting, normals, 10-10 arcs) lives in :mod:`CondNetLogic.scalp`;
this module only adapts it to what the user handles in Slicer (a dragged point, a rotation handle,
control-point labels).  Pure numpy on RAS millimetres; runs without Slicer.

Coil frame (as in :mod:`CondNetLogic.coil`): origin at the coil centre, +z = normal pointing INTO the
head, +y = handle direction, +x = y cross z.  The coil markup's control point stores the same axes as
its orientation matrix (columns x, y, z), so rotating the point in a 3D view turns the handle.

Handle angle (:func:`handleDirection`, :func:`handleAngle`): as in :mod:`CondNetLogic.scalp`, measured on the
scalp's tangent plane from the posterior direction, positive towards lateral (away from the midline), so that
+45 degrees is the usual motor-cortex orientation on either hemisphere.
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

# The coil axes, handle angle and landmark helpers live in CondNetLogic.scalp (the command line uses them too);
# the Slicer module calls them by these names.
LANDMARK_ALIASES = scalp.LANDMARK_ALIASES
MIDLINE_SINE = scalp.MIDLINE_SINE
rotateAbout = scalp.rotate_about
coilFrame = scalp.coil_axes
lateralSense = scalp.lateral_sense
handleDirection = scalp.handle_direction
handleAngle = scalp.handle_angle
findLandmarks = scalp.find_landmarks


def headMask(conductivity: Volume, *, threshold: float = 0.0) -> Volume:
    """Boolean head mask: the largest connected component of the voxels whose conductivity (S/m) is above
    ``threshold`` (stray voxels outside the scalp would catch the coil, see :func:`CondNetLogic.scalp.outer_head`).

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
    return scalp.outer_head(conductivity.with_array(mask))


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
    direction = scalp.unit_vector(directionIntoHead, "the direction into the head")
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


def eegPositions(
    mask: Volume, labelled: Dict[str, Sequence[float]], names: Optional[Sequence[str]] = None
) -> Dict[str, np.ndarray]:
    """Scalp positions (RAS mm) of 10-10 electrodes (default: all of :data:`CondNetLogic.scalp.EEG_1010`)."""
    names = list(scalp.EEG_1010) if names is None else list(names)
    return scalp.eeg_positions(names, findLandmarks(labelled), mask)
