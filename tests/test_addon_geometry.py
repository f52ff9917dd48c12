"""The add-on's camera-rig geometry (`addon/rig_geometry.py`) with hand-worked numbers.

The module is loaded by its file path, not through the add-on package: it must work with
numpy and the standard library alone (no bpy, no mathutils), so these tests run anywhere."""
from __future__ import annotations

import ast
import importlib.util
import math

import numpy as np
import pytest

from conftest import ROOT

PATH = ROOT / "addon" / "rig_geometry.py"
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))          # 2.39996 rad, the spiral's azimuth step


@pytest.fixture(scope="module")
def geo():
    spec = importlib.util.spec_from_file_location("ngp_rig_geometry", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_numpy_and_the_standard_library_only():
    tree = ast.parse(PATH.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert imported <= {"__future__", "math", "numpy"}, imported
    assert not relative, relative            # loads on its own, outside the add-on package


# ------------------------------------------------------------------------------ rig directions
@pytest.mark.parametrize("n", [7, 60, 301])
def test_hemisphere_directions_are_unit_within_the_band_and_balanced(geo, n):
    d = geo.rig_directions(n, sphere=False)
    assert d.shape == (n, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    elevation = np.degrees(np.arcsin(d[:, 2]))
    assert elevation.min() > 5.0 and elevation.max() < 85.0
    # Heights evenly spaced: n equal slices of sin(5 deg)..sin(85 deg), one view mid-slice.
    step = (math.sin(math.radians(85)) - math.sin(math.radians(5))) / n
    np.testing.assert_allclose(np.diff(d[:, 2]), step, atol=1e-12)
    # Azimuths step by the golden angle, so their unit vectors cancel: |sum e^(i k g)| =
    # |1 - e^(i n g)| / |1 - e^(i g)| <= 1 / sin(g / 2) = 1.0729 for every n.
    az = np.arctan2(d[:, 1], d[:, 0])
    assert abs(np.exp(1j * az).sum()) <= 1.0 / math.sin(GOLDEN_ANGLE / 2) + 1e-9


def test_one_hemisphere_view_is_at_the_middle_height(geo):
    # z = (sin 5 + sin 85) / 2 = (0.0871557 + 0.9961947) / 2 = 0.5416752, azimuth 0,
    # x = sqrt(1 - z^2) = 0.8405879.
    np.testing.assert_allclose(geo.rig_directions(1, sphere=False), [[0.8405879, 0.0, 0.5416752]],
                               atol=1e-7)


def test_sphere_directions_cover_both_halves_evenly(geo):
    d = geo.rig_directions(100, sphere=True)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    # z = -0.95 + 1.9 (k + 0.5) / 100: -0.9405 ... 0.9405, symmetric about 0.
    assert d[0, 2] == pytest.approx(-0.9405) and d[-1, 2] == pytest.approx(0.9405)
    assert d[:, 2].mean() == pytest.approx(0.0, abs=1e-12)
    assert (d[:, 2] > 0).sum() == 50


# ------------------------------------------------------------------------------ boxes and radius
def test_bounds_and_centre_of_a_point_set(geo):
    pts = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, -1.0], [1.0, 3.0, 0.5]])
    lo, hi = geo.points_bounds(pts)
    np.testing.assert_array_equal(lo, [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(hi, [2.0, 3.0, 0.5])
    centre, half = geo.box_centre_half(lo, hi)
    np.testing.assert_array_equal(centre, [1.0, 1.5, -0.25])
    assert half == 1.5                                      # sides 2, 3, 1.5: half the largest


def test_bounds_of_a_rotated_cube_corners(geo):
    # The 8 corners of the cube [-1, 1]^3 turned 45 degrees about Z and moved by (5, 0, 2):
    # x and y reach +-sqrt(2) around the centre, z keeps +-1.
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    lo, hi = geo.points_bounds(corners @ rot.T + [5.0, 0.0, 2.0])
    r2 = math.sqrt(2.0)
    np.testing.assert_allclose(lo, [5.0 - r2, -r2, 1.0], atol=1e-12)
    np.testing.assert_allclose(hi, [5.0 + r2, r2, 3.0], atol=1e-12)
    centre, half = geo.box_centre_half(lo, hi)
    np.testing.assert_allclose(centre, [5.0, 0.0, 2.0], atol=1e-12)
    assert half == pytest.approx(r2)


def test_rig_radius_fits_the_bounding_sphere_with_a_margin(geo):
    # Box 2 x 2 x 1: diagonal 3, bounding sphere radius 1.5; seen with a 30 degree half field
    # of view it fits at 1.5 / sin(30 deg) = 3, and 10% further: 3.3.
    assert geo.rig_radius(np.zeros(3), np.array([2.0, 2.0, 1.0]), math.radians(30)) == pytest.approx(3.3)


def test_unit_cube_holds_the_box_with_the_same_margin(geo):
    # Half-extent 1 -> the cube's side is 2 x 1.1 = 2.2 world units (instant-ngp's `scale`
    # 1 / 2.2 = 0.4545); a single point still gets a cube, 2.2e-6 wide.
    assert geo.scene_cube_side(1.0) == pytest.approx(2.2)
    assert geo.scene_cube_side(0.0) == pytest.approx(2.2e-6)


# ------------------------------------------------------------------------------ cameras' focus
def test_two_cameras_looking_at_one_point_meet_there(geo):
    target = np.array([1.0, 2.0, 3.0])
    origins = np.array([target + [5.0, 0.0, 0.0], target + [0.0, 0.0, -4.0]])
    forwards = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])         # need not be unit
    np.testing.assert_allclose(geo.axes_meeting_point(origins, forwards), target, atol=1e-12)
    # Distances 5 and 4, median 4.5; camera_angle_x = 2 atan(1/2) sees 4.5 * 1/2 either side.
    centre, half = geo.cameras_focus(origins, forwards, 2.0 * math.atan(0.5))
    np.testing.assert_allclose(centre, target, atol=1e-12)
    assert half == pytest.approx(2.25)


def test_skew_axes_meet_halfway_between_them(geo):
    # Axis 1 along X through (0, 0, 1), axis 2 along Y through (0, 0, -1): the sum of
    # (I - d d^T) is diag(1, 1, 2) and of (I - d d^T) o is (0, 0, 1) + (0, 0, -1) = 0, so the
    # least-squares point is the origin, the middle of their common perpendicular.
    origins = np.array([[-3.0, 0.0, 1.0], [0.0, 7.0, -1.0]])
    forwards = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    np.testing.assert_allclose(geo.axes_meeting_point(origins, forwards), [0.0, 0.0, 0.0], atol=1e-12)


def test_a_ring_of_rig_cameras_focuses_on_its_centre(geo):
    # Cameras placed the way Render Camera Rig places them: centre + radius * d, looking along -d.
    centre, radius = np.array([0.3, -0.2, 0.4]), 2.5
    d = geo.rig_directions(24, sphere=True)
    focus, half = geo.cameras_focus(centre + radius * d, -d, math.radians(40))
    np.testing.assert_allclose(focus, centre, atol=1e-12)
    assert half == pytest.approx(radius * math.tan(math.radians(20)))
