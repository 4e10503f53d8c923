"""Geometry: box overlap, point-to-box distance, resampling (hand-computed cases)."""

import numpy as np

from steer.driving.geometry import boxes_overlap, point_box_distance, project_to_segments, resample_polyline


def test_boxes_overlap_axis_aligned_and_rotated():
    # Two 4 x 2 boxes 3.9 m apart along x overlap by 0.1 m; 4.1 m apart they do not.
    assert boxes_overlap(0, 0, 0, 4, 2, 3.9, 0, 0, 4, 2)
    assert not boxes_overlap(0, 0, 0, 4, 2, 4.1, 0, 0, 4, 2)
    # Rotated by 90 degrees: b's half extent along x is 1 m, so the limit is 2 + 1 = 3 m.
    assert boxes_overlap(0, 0, 0, 4, 2, 2.9, 0, np.pi / 2, 4, 2)
    assert not boxes_overlap(0, 0, 0, 4, 2, 3.1, 0, np.pi / 2, 4, 2)
    # A 45-degree square of side 2 reaches sqrt(2) m from its centre: corner test.
    assert boxes_overlap(0, 0, 0, 2, 2, 1 + np.sqrt(2) - 0.05, 0, np.pi / 4, 2, 2)
    assert not boxes_overlap(0, 0, 0, 2, 2, 1 + np.sqrt(2) + 0.05, 0, np.pi / 4, 2, 2)


def test_point_box_distance():
    assert point_box_distance(0.5, 0.5, 0, 0, 0, 4, 2) == 0.0
    assert np.isclose(point_box_distance(5.0, 0.0, 0, 0, 0, 4, 2), 3.0)
    assert np.isclose(point_box_distance(5.0, 5.0, 0, 0, 0, 4, 2), np.hypot(3.0, 4.0))
    # Box rotated by 90 degrees: its long side is along y.
    assert np.isclose(point_box_distance(0.0, 5.0, 0, 0, np.pi / 2, 4, 2), 3.0)


def test_project_to_segments():
    t, d2 = project_to_segments(np.array(2.0), np.array(1.0), 0.0, 0.0, 4.0, 0.0)
    assert np.isclose(t, 0.5) and np.isclose(d2, 1.0)
    t, d2 = project_to_segments(np.array(-3.0), np.array(0.0), 0.0, 0.0, 4.0, 0.0)
    assert t == 0.0 and np.isclose(d2, 9.0)


def test_resample_polyline_uniform_spacing():
    p = resample_polyline(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 5.5]]), 1.0)
    d = np.linalg.norm(np.diff(p, axis=0), axis=1)
    # 15.5 m in 16 equal arc steps; only the chord across the corner is shorter.
    assert np.isclose(np.median(d), 15.5 / 16) and (np.abs(d - 15.5 / 16) > 1e-9).sum() == 1
    assert np.allclose(p[-1], [10.0, 5.5]) and len(p) == 17
