"""Plane geometry shared by the maps, the simulator and the rasterizer.

Frame: right-handed, x east, y north, yaw counter-clockwise from +x, metres and radians.
Everything here is vectorized over leading array dimensions.
"""

from __future__ import annotations

import numpy as np


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def polyline_arclength(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length [n] of a polyline [n, 2], starting at 0."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def resample_polyline(points: np.ndarray, spacing: float) -> np.ndarray:
    """Resample a polyline at uniform arc-length spacing (at most ``spacing``), keeping both ends.

    Duplicate consecutive points are dropped first so that the arc length is strictly increasing.
    """
    points = np.asarray(points, dtype=np.float64)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-6])
    points = points[keep]
    if len(points) < 2:
        raise ValueError("a polyline needs two distinct points")
    s = polyline_arclength(points)
    n = max(2, int(np.ceil(s[-1] / spacing)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def polyline_headings(points: np.ndarray) -> np.ndarray:
    """Heading [n] of a polyline at each point (the last point takes the last segment's heading)."""
    d = np.diff(points, axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    return np.concatenate([h, h[-1:]])


def polyline_curvature(points: np.ndarray) -> np.ndarray:
    """Unsigned curvature [n] (1/m) from heading change over arc length, zero at the ends."""
    h = polyline_headings(points)
    ds = np.linalg.norm(np.diff(points, axis=0), axis=1)
    k = np.zeros(len(points))
    if len(points) > 2:
        dh = np.abs(wrap_angle(np.diff(h[:-1])))
        k[1:-1] = dh / np.maximum(0.5 * (ds[:-1] + ds[1:]), 1e-6)
    return k


def cubic_bezier(p0, d0, p1, d1, n: int = 32, handle: float | None = None) -> np.ndarray:
    """A cubic Bezier [n, 2] from p0 leaving along unit d0 to p1 arriving along unit d1."""
    p0, d0, p1, d1 = (np.asarray(v, dtype=np.float64) for v in (p0, d0, p1, d1))
    if handle is None:
        handle = 0.45 * float(np.linalg.norm(p1 - p0))
    c0, c1 = p0 + handle * d0, p1 - handle * d1
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1


def box_corners(x, y, yaw, length, width) -> np.ndarray:
    """Corners [..., 4, 2] of oriented boxes centred at (x, y), counter-clockwise from front-left."""
    c, s = np.cos(yaw), np.sin(yaw)
    hl, hw = np.asarray(length) / 2.0, np.asarray(width) / 2.0
    lx = np.stack([hl, -hl, -hl, hl], axis=-1) * np.ones_like(np.asarray(x))[..., None]
    ly = np.stack([hw, hw, -hw, -hw], axis=-1) * np.ones_like(np.asarray(x))[..., None]
    cx = np.asarray(x)[..., None] + c[..., None] * lx - s[..., None] * ly
    cy = np.asarray(y)[..., None] + s[..., None] * lx + c[..., None] * ly
    return np.stack([cx, cy], axis=-1)


def boxes_overlap(xa, ya, yawa, la, wa, xb, yb, yawb, lb, wb) -> np.ndarray:
    """Whether oriented boxes a and b overlap (separating-axis test), elementwise over broadcast shapes.

    Boxes that only touch count as not overlapping.
    """
    dx, dy = np.asarray(xb) - xa, np.asarray(yb) - ya
    ca, sa, cb, sb = np.cos(yawa), np.sin(yawa), np.cos(yawb), np.sin(yawb)
    # |cos| and |sin| of the relative angle project b's half extents onto a's axes and back.
    cr = np.abs(ca * cb + sa * sb)
    sr = np.abs(ca * sb - sa * cb)
    hla, hwa, hlb, hwb = la / 2.0, wa / 2.0, lb / 2.0, wb / 2.0
    sep = np.abs(dx * ca + dy * sa) >= hla + hlb * cr + hwb * sr
    sep |= np.abs(-dx * sa + dy * ca) >= hwa + hlb * sr + hwb * cr
    sep |= np.abs(dx * cb + dy * sb) >= hlb + hla * cr + hwa * sr
    sep |= np.abs(-dx * sb + dy * cb) >= hwb + hla * sr + hwa * cr
    return ~sep


def point_box_distance(px, py, bx, by, byaw, blen, bwid) -> np.ndarray:
    """Euclidean distance from points to oriented boxes (0 inside), elementwise over broadcast shapes."""
    dx, dy = np.asarray(px) - bx, np.asarray(py) - by
    c, s = np.cos(byaw), np.sin(byaw)
    lon = np.abs(dx * c + dy * s) - blen / 2.0
    lat = np.abs(-dx * s + dy * c) - bwid / 2.0
    return np.hypot(np.maximum(lon, 0.0), np.maximum(lat, 0.0))


def project_to_segments(px, py, ax, ay, bx, by):
    """Project points onto segments a→b; returns (t in [0, 1], squared distance), broadcast."""
    vx, vy = bx - ax, by - ay
    wx, wy = px - ax, py - ay
    vv = np.maximum(vx * vx + vy * vy, 1e-12)
    t = np.clip((wx * vx + wy * vy) / vv, 0.0, 1.0)
    ex, ey = wx - t * vx, wy - t * vy
    return t, ex * ex + ey * ey
