"""Coordinate conversion between our frame and CARLA's (the one place that knows about it).

Ours: right-handed, x east, y north, yaw counter-clockwise in radians. CARLA (Unreal): left-handed,
x forward, y to the right, z up, yaw clockwise in degrees. Same x, flipped y, negated yaw.
OpenDRIVE files are right-handed like ours; CARLA flips y when it loads them.
"""

from __future__ import annotations

import numpy as np


def to_carla(x, y, yaw):
    """Our (x, y, yaw rad) -> CARLA (x, y, yaw deg)."""
    return np.asarray(x), -np.asarray(y), -np.degrees(yaw)


def from_carla(x, y, yaw_deg):
    """CARLA (x, y, yaw deg) -> our (x, y, yaw rad in [-pi, pi))."""
    yaw = -np.radians(yaw_deg)
    return np.asarray(x), -np.asarray(y), (yaw + np.pi) % (2 * np.pi) - np.pi


def transform_to_ours(transform) -> tuple[float, float, float]:
    """A ``carla.Transform`` -> our (x, y, yaw)."""
    x, y, yaw = from_carla(transform.location.x, transform.location.y, transform.rotation.yaw)
    return float(x), float(y), float(yaw)


def ours_to_transform(x: float, y: float, yaw: float, z: float = 0.5):
    """Our (x, y, yaw) -> a ``carla.Transform`` (``z`` metres above the road)."""
    import carla

    cx, cy, cyaw = to_carla(x, y, yaw)
    return carla.Transform(carla.Location(float(cx), float(cy), z), carla.Rotation(yaw=float(cyaw)))
