"""Scalp points, normals and 10-10 positions on an analytic sphere head, in a non-RAS grid; landmark files."""
import json

import numpy as np
import pytest

from CondNetLogic.scalp import (
    eeg_position,
    handle_towards,
    head_centre,
    nearest_scalp_point,
    outer_head,
    read_landmarks,
    scalp_normal,
    scalp_point_along_ray,
    scalp_points_around,
)
from CondNetLogic.volume import Volume

RADIUS = 40.0


@pytest.fixture(scope="module")
def sphere_mask() -> Volume:
    """A 40 mm ball centred at RAS (5, -3, 2) on a 1 mm L-I-A grid."""
    lia = np.array([[-1.0, 0, 0, 50], [0, 0, 1, -50], [0, -1, 0, 50], [0, 0, 0, 1]])
    vol = Volume(np.zeros((101, 101, 101), dtype=np.uint8), lia)
    ijk = np.stack(np.meshgrid(*[np.arange(101)] * 3, indexing="ij"), axis=-1)
    ras = vol.ijk_to_ras_points(ijk)
    inside = np.linalg.norm(ras - [5.0, -3.0, 2.0], axis=-1) <= RADIUS
    return vol.with_array(inside.astype(np.uint8))


def test_centre_ray_and_normal(sphere_mask):
    centre = head_centre(sphere_mask)
    np.testing.assert_allclose(centre, [5, -3, 2], atol=0.5)
    direction = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2)
    point = scalp_point_along_ray(sphere_mask, centre, direction)
    assert np.linalg.norm(point - centre) == pytest.approx(RADIUS, abs=1.0)
    normal = scalp_normal(sphere_mask, point)
    assert np.dot(normal, -direction) > 0.99  # inward


def test_ray_missing_the_head_raises(sphere_mask):
    with pytest.raises(ValueError, match="misses"):
        scalp_point_along_ray(sphere_mask, [200.0, 200.0, 200.0], [1.0, 0.0, 0.0])


def test_c3_on_a_sphere(sphere_mask):
    c = np.array([5.0, -3.0, 2.0])
    landmarks = {
        "Nz": c + [0, RADIUS, 0], "Iz": c + [0, -RADIUS, 0], "LPA": c + [-RADIUS, 0, 0], "RPA": c + [RADIUS, 0, 0]
    }
    cz = eeg_position("Cz", landmarks, sphere_mask)
    np.testing.assert_allclose(cz, c + [0, 0, RADIUS], atol=1.5)
    # C3 is 30 % along LPA -> RPA over the vertex: 54 degrees up from LPA in the coronal plane, on the left.
    c3 = eeg_position("C3", landmarks, sphere_mask)
    angle = np.deg2rad(0.3 * 180)
    np.testing.assert_allclose(c3, c + RADIUS * np.array([-np.cos(angle), 0, np.sin(angle)]), atol=1.5)
    fz = eeg_position("Fz", landmarks, sphere_mask)
    assert fz[1] > c[1] + 20  # anterior


def test_cz_is_refined_on_the_ear_to_ear_arc(sphere_mask):
    """Nz and Iz 10 degrees right of the midline: the Nz-Iz arc's midpoint is 7 mm right of the vertex, and Cz, the
    midpoint of the LPA-RPA arc through it, is the vertex itself."""
    c = np.array([5.0, -3.0, 2.0])
    tilt = np.deg2rad(10.0)
    landmarks = {"Nz": c + RADIUS * np.array([np.sin(tilt), np.cos(tilt), 0]),
                 "Iz": c + RADIUS * np.array([np.sin(tilt), -np.cos(tilt), 0]),
                 "LPA": c + [-RADIUS, 0, 0], "RPA": c + [RADIUS, 0, 0]}
    np.testing.assert_allclose(eeg_position("Cz", landmarks, sphere_mask), c + [0, 0, RADIUS], atol=1.5)


def _slerp(centre, a, b, t):
    """The point a fraction ``t`` along the circle arc about ``centre`` from ``a`` to ``b`` (same radius)."""
    u, v = a - centre, b - centre
    theta = np.arccos(np.dot(u, v) / np.dot(u, u))
    return centre + (np.sin((1 - t) * theta) * u + np.sin(t * theta) * v) / np.sin(theta)


def test_circumference_and_row_positions_on_a_sphere(sphere_mask):
    """On a ball the 10-10 lines are circles: the circumference through Fpz, T7 and Oz lies 18 degrees above the
    equator (10 % of the Nz-Iz arc), F7 54 degrees round it from the front; a row (F7-Fz-F8) is the circle in the
    plane of its three points, and F3 lies halfway along it from F7 to Fz (Oostenveld & Praamstra 2001)."""
    c = np.array([5.0, -3.0, 2.0])
    landmarks = {
        "Nz": c + [0, RADIUS, 0], "Iz": c + [0, -RADIUS, 0], "LPA": c + [-RADIUS, 0, 0], "RPA": c + [RADIUS, 0, 0]
    }
    up = np.deg2rad(18.0)

    def around(azimuth_deg, side):  # on the circumference, azimuth from the front, side -1 left, +1 right
        a = np.deg2rad(azimuth_deg)
        return c + RADIUS * np.array([side * np.cos(up) * np.sin(a), np.cos(up) * np.cos(a), np.sin(up)])

    expected = {"Fp1": around(18, -1), "F7": around(54, -1), "P7": around(126, -1), "O1": around(162, -1),
                "Fp2": around(18, 1), "F8": around(54, 1), "P8": around(126, 1), "O2": around(162, 1)}
    for row, middle, ends in (("F", np.deg2rad(54.0), ("F7", "F8")), ("P", np.deg2rad(126.0), ("P7", "P8"))):
        top = c + RADIUS * np.array([0.0, np.cos(middle), np.sin(middle)])  # Fz or Pz
        left, right = expected[ends[0]], expected[ends[1]]
        normal = np.cross(top - left, right - left)
        normal /= np.linalg.norm(normal)
        circle = c + np.dot(left - c, normal) * normal  # centre of the row's circle
        for number, t in ((5, 0.25), (3, 0.5), (1, 0.75)):
            expected[f"{row}{number}"] = _slerp(circle, left, top, t)
            expected[f"{row}{number + 1}"] = _slerp(circle, right, top, t)
    for name, point in expected.items():
        np.testing.assert_allclose(eeg_position(name, landmarks, sphere_mask), point, atol=1.5, err_msg=name)


def test_stray_voxels_outside_the_scalp_are_not_the_head(sphere_mask):
    """A blob 10 mm outside the ball on the ray to C3 catches the ray (the outermost mask voxel); outer_head drops
    it, and C3 is where it is on the ball alone."""
    c = np.array([5.0, -3.0, 2.0])
    landmarks = {
        "Nz": c + [0, RADIUS, 0], "Iz": c + [0, -RADIUS, 0], "LPA": c + [-RADIUS, 0, 0], "RPA": c + [RADIUS, 0, 0]
    }
    angle = np.deg2rad(0.3 * 180)
    c3 = c + RADIUS * np.array([-np.cos(angle), 0, np.sin(angle)])
    blob = np.rint(sphere_mask.ras_to_ijk_points(c + (RADIUS + 10.0) / RADIUS * (c3 - c))).astype(int)
    stray = sphere_mask.array.copy()
    stray[tuple(slice(v - 1, v + 2) for v in blob)] = 1
    stray = sphere_mask.with_array(stray)
    assert np.linalg.norm(eeg_position("C3", landmarks, stray) - c3) > 5.0  # caught by the blob
    head = outer_head(stray)
    assert head.array.dtype == bool
    np.testing.assert_array_equal(head.array, sphere_mask.array > 0)
    np.testing.assert_allclose(eeg_position("C3", landmarks, head), c3, atol=1.5)
    with pytest.raises(ValueError, match="empty"):
        outer_head(sphere_mask.with_array(np.zeros(sphere_mask.shape, dtype=np.uint8)))


def test_an_ear_or_a_sinus_does_not_catch_a_targets_scalp_point(sphere_mask):
    """An "ear" (a plate 10 mm off the ball, joined to it by a stalk) lies on the ray from a target through its
    nearest outer voxel, and an enclosed air cavity lies between another target and the surface: both targets' scalp
    points stay on the ball (the first exit, the cavity filled by outer_head).  Rays from the centre still stop at
    the outermost voxel, the ear's, where a coil would rest."""
    c = np.array([5.0, -3.0, 2.0])
    ras = sphere_mask.ijk_to_ras_points(np.argwhere(np.ones(sphere_mask.shape, dtype=bool))).reshape(
        sphere_mask.shape + (3,)) - c
    plate = (ras[..., 0] < -48) & (ras[..., 0] > -50) & (np.abs(ras[..., 1]) < 15) & (np.abs(ras[..., 2]) < 25)
    stalk = (ras[..., 0] < -35) & (ras[..., 0] >= -48) & (np.abs(ras[..., 1]) < 4) & (np.abs(ras[..., 2] + 20) < 3)
    sinus = np.linalg.norm(ras - [0.0, 0.0, 28.0], axis=-1) < 5.0
    raw = sphere_mask.with_array((sphere_mask.array > 0) & ~sinus | plate | stalk)
    mask = outer_head(raw)
    assert mask.array[sinus].all()  # filled
    for target in ([-30.0, 0.0, 5.0], [-30.0, 0.0, 0.0]):
        scalp_point = nearest_scalp_point(mask, c + target)
        assert abs(np.linalg.norm(scalp_point - c) - RADIUS) <= 1.5, target
    assert np.linalg.norm(nearest_scalp_point(mask, c + [0.0, 0.0, 20.0]) - c - [0.0, 0.0, RADIUS]) <= 1.5
    assert nearest_scalp_point(raw, c + [0.0, 0.0, 20.0])[2] < c[2] + 25.0  # unfilled: caught by the cavity
    np.testing.assert_allclose(scalp_point_along_ray(mask, c, [-1.0, 0.0, 0.0]), c - [49.5, 0.0, 0.0], atol=1.0)


def test_bad_requests(sphere_mask):
    with pytest.raises(ValueError, match="unknown"):
        eeg_position("X9", {}, sphere_mask)
    with pytest.raises(ValueError, match="missing"):
        eeg_position("C3", {"Nz": np.zeros(3)}, sphere_mask)
    with pytest.raises(ValueError, match="empty"):
        head_centre(sphere_mask.with_array(np.zeros(sphere_mask.shape, dtype=np.uint8)))


LANDMARKS_RAS = {"Nz": [1.0, 90.0, -10.0], "Iz": [2.0, -95.0, -20.0], "LPA": [-75.0, -10.0, -30.0],
                 "RPA": [74.0, -12.0, -29.0]}


def _markups(system, labels=("Nz", "Iz", "LPA", "RPA")):
    flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
    points = [{"label": label, "position": (flip * LANDMARKS_RAS[key]).tolist()}
              for label, key in zip(labels, LANDMARKS_RAS)]
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                       "Schema/markups-schema-v1.0.3.json#",
            "markups": [{"type": "Fiducial", "coordinateSystem": system, "controlPoints": points}]}


@pytest.mark.parametrize(
    "content",
    [
        _markups("LPS"),  # what Slicer 5 writes by default: converted to RAS
        _markups("RAS"),
        _markups("LPS", labels=("nasion", "INION", "lpa", "RPA")),  # the aliases the panel accepts
        {"frame": "RAS", "units": "mm", "landmarks": LANDMARKS_RAS},  # as Resources/sample/*_landmarks.json
        LANDMARKS_RAS,
    ],
)
def test_landmark_files_give_ras_points(tmp_path, content):
    path = tmp_path / "landmarks.mrk.json"
    path.write_text(json.dumps(content))
    found = read_landmarks(path)
    assert set(found) == set(LANDMARKS_RAS)
    for name, point in LANDMARKS_RAS.items():
        np.testing.assert_allclose(found[name], point)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_markups("LPS", labels=("Nz", "Iz", "LPA", "X")), "missing RPA"),
        ({"markups": [{**_markups("LPS")["markups"][0], "coordinateSystem": "IJK"}]}, "neither RAS nor LPS"),
        ({"landmarks": {**LANDMARKS_RAS, "Nz": [1.0, 2.0]}}, "no landmarks read"),
        ([1, 2, 3], "expected a JSON object"),
        ({"landmarks": {k: [-v[0], -v[1], v[2]] for k, v in LANDMARKS_RAS.items()}},  # LPS given as RAS
         "RPA is not right of LPA and Nz is not in front of Iz"),
        ({**LANDMARKS_RAS, "LPA": LANDMARKS_RAS["RPA"], "RPA": LANDMARKS_RAS["LPA"]}, "look mirrored or mislabelled"),
        ({**LANDMARKS_RAS, "Iz": [0.0, float("nan"), 0.0]}, "Iz are not finite"),
        ({"markups": [{**_markups("LPS")["markups"][0], "controlPoints": [
            {**point, "positionStatus": "undefined" if point["label"] == "RPA" else "defined"}
            for point in _markups("LPS")["markups"][0]["controlPoints"]]}]}, "missing RPA"),  # listed, not placed
    ],
)
def test_bad_landmark_files_raise(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match) as raised:
        read_landmarks(path)
    assert str(path) in str(raised.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="no landmarks read"):
        read_landmarks(path)
    with pytest.raises(FileNotFoundError):
        read_landmarks(tmp_path / "missing.json")


def test_nearest_scalp_point_of_a_target_inside_the_sphere(sphere_mask):
    """For a point inside a ball: the surface point on the ray from the centre through it (to a voxel)."""
    c = np.array([5.0, -3.0, 2.0])
    direction = np.array([-0.3, 0.5, 0.8]) / np.linalg.norm([-0.3, 0.5, 0.8])
    target = c + 25.0 * direction  # 15 mm under the surface
    nearest = nearest_scalp_point(sphere_mask, target)
    assert abs(np.linalg.norm(nearest - c) - RADIUS) <= 1.0  # on the surface
    assert 14.0 <= np.linalg.norm(nearest - target) <= 16.0
    assert np.dot(nearest - c, direction) / np.linalg.norm(nearest - c) > np.cos(np.deg2rad(6.0))  # on the ray
    outside = c + 60.0 * direction
    assert abs(np.linalg.norm(nearest_scalp_point(sphere_mask, outside) - c) - RADIUS) <= 1.0
    assert sphere_mask.array[tuple(np.rint(sphere_mask.ras_to_ijk_points(nearest)).astype(int))]
    with pytest.raises(ValueError, match="3 finite numbers"):
        nearest_scalp_point(sphere_mask, [0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="empty"):
        nearest_scalp_point(sphere_mask.with_array(np.zeros(sphere_mask.shape, dtype=np.uint8)), c)


def test_scalp_points_around_a_centre(sphere_mask):
    """A square grid on the tangent plane, within the radius, moved along the normal onto the ball's surface."""
    c = np.array([5.0, -3.0, 2.0])
    top = c + [0.0, 0.0, RADIUS]
    points = scalp_points_around(sphere_mask, top, [0.0, 0.0, -1.0], 10.0, 5.0)
    assert len(points) == 13  # offsets (u, v) in {-10, -5, 0, 5, 10}^2 with u^2 + v^2 <= 100
    np.testing.assert_allclose(points[0], top, atol=1.0)  # the centre first
    np.testing.assert_allclose(np.linalg.norm(points - c, axis=1), RADIUS, atol=1.0)  # on the surface
    tangential = np.linalg.norm(points[:, :2] - top[:2], axis=1)
    assert tangential.max() <= 10.0 + 1e-9
    assert len({tuple(np.round(point, 6)) for point in points}) == 13
    assert len(scalp_points_around(sphere_mask, top, [0.0, 0.0, -1.0], 4.9, 5.0)) == 1
    with pytest.raises(ValueError, match="radius must be >= 0 and the step > 0"):
        scalp_points_around(sphere_mask, top, [0.0, 0.0, -1.0], 10.0, 0.0)


def test_handle_towards_a_point_lies_on_the_tangent_plane():
    """SimNIBS pos_ydir: the handle runs from the scalp point towards a point, orthogonal to the normal."""
    scalp, normal = np.array([10.0, 0.0, 90.0]), np.array([0.0, 0.0, -3.0])  # any length
    np.testing.assert_allclose(handle_towards(scalp, normal, [10.0, 40.0, 95.0]), [0.0, 1.0, 0.0], atol=1e-12)
    tilted = np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0)
    handle = handle_towards(scalp, tilted, scalp + [20.0, 30.0, 0.0])
    assert np.dot(handle, tilted) == pytest.approx(0.0, abs=1e-12)
    assert np.linalg.norm(handle) == pytest.approx(1.0)
    np.testing.assert_allclose(handle, np.array([10.0, 30.0, 10.0]) / np.linalg.norm([10.0, 30.0, 10.0]))
    for point in (scalp, scalp + [0.0, 0.0, 50.0], scalp + [0.3, 0.0, -50.0]):  # on the normal, or within 0.6 deg
        with pytest.raises(ValueError, match="lies on the coil normal"):
            handle_towards(scalp, normal, point)
    with pytest.raises(ValueError, match="not finite"):
        handle_towards(scalp, normal, [np.nan, 0.0, 0.0])

