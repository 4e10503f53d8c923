"""Rewards over the simulator's per-step state: CaRL's simple reward and Roach's shaped reward.

Both are pure functions of arrays [N] so that they can be tested on hand-computed cases and used by
every backend. CaRL (CARLA variant): the route-completion increase in percent, multiplied by soft
factors, with -1 at termination by collision or red light. Roach: speed, position, rotation and
action terms with -1 (minus speed for collision and red light) at termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

COMFORT_LIMITS = {
    "lon_accel_max": 2.40,
    "lon_accel_min": -4.05,
    "lat_accel": 4.89,
    "yaw_rate": 0.95,
    "yaw_accel": 1.93,
    "lon_jerk": 4.13,
    "jerk": 8.37,
}
"""Comfort bounds (SI units) of the six comfort checks (nuPlan's values, used by CaRL)."""


@dataclass(frozen=True)
class CarlRewardConfig:
    """Constants of the CaRL reward."""

    speeding_tolerance: float = 2.23
    """Speed above the limit (m/s) at which the speeding factor reaches 0."""
    ttc_factor: float = 0.5
    """Factor while a time-to-collision violation is active."""
    comfort_weight: float = 0.5
    """Weight of the share of violated comfort checks."""
    n_comfort_checks: int = 6
    """Number of comfort checks."""
    terminal_penalty: float = 1.0
    """Subtracted at termination by a collision or a red light."""
    light_brake: float = 0.0
    """Red-light factor (0: off): progress toward a stop line where the ego must stop (red or yellow
    light, stop sign, right of way to give) counts like speeding above
    sqrt(2 · light_brake · gap), the speed from which the ego still stops before the line at this
    deceleration (m/s^2); with the speeding tolerance the factor falls to 0. A soft factor in CaRL's
    way that tells the policy, step by step, that it approaches a red light too fast."""
    lost_route_penalty: bool = False
    """Also subtract, at any termination (infraction, blocked, timeout), the route percent left undone:
    the return then counts the route that a failure gives up at the step that gives it up, instead
    of only through the discounted progress that never comes (faster learning; off in CaRL)."""


@dataclass(frozen=True)
class RoachRewardConfig:
    """Constants of Roach's shaped reward."""

    desired_speed: float = 6.0
    """Desired speed without hazards, m/s."""
    speed_scale: float = 6.0
    """Speed error (m/s) at which r_speed reaches 0."""
    vehicle_offset: float = 8.0
    """Desired speed falls to 0 over 5 m from this distance to a vehicle ahead, metres."""
    light_offset: float = 5.0
    """Desired speed falls to 0 over 5 m from this distance to a red light's stop line, metres."""
    steer_change_threshold: float = 0.01
    """Steering change (normalized action) that costs ``steer_change_penalty``."""
    steer_change_penalty: float = 0.1
    """Penalty for a steering change above the threshold."""


class RewardState(NamedTuple):
    """What both rewards read, one value per environment."""

    progress_pct: np.ndarray
    """Increase of route completion this step, percent."""
    outside_route_lanes: np.ndarray
    """Ego is outside the lanes of its route (bool)."""
    speed: np.ndarray
    """Ego speed, m/s."""
    speed_limit: np.ndarray
    """Speed limit at the ego, m/s."""
    ttc_violation: np.ndarray
    """A time-to-collision violation is active (bool)."""
    comfort_violations: np.ndarray
    """Number of violated comfort checks (0..6)."""
    lateral: np.ndarray
    """Distance from the route centre line, metres."""
    lane_width: np.ndarray
    """Width of the route lane, metres."""
    heading_error: np.ndarray
    """Ego yaw minus route heading, radians."""
    steer_change: np.ndarray
    """Absolute change of the normalized steering action."""
    hazard_vehicle_gap: np.ndarray
    """Distance to the vehicle ahead on the route, metres (inf if none)."""
    hazard_light_gap: np.ndarray
    """Distance to a red or yellow stop line ahead, metres (inf if none)."""
    terminated: np.ndarray
    """Episode ended by an infraction (bool)."""
    collision_or_red_light: np.ndarray
    """The termination was a collision or a red light (bool)."""
    route_left_pct: np.ndarray | None = None
    """Route percent not yet driven (for ``lost_route_penalty``)."""


def carl_factors(st: RewardState, cfg: CarlRewardConfig = CarlRewardConfig()) -> dict[str, np.ndarray]:
    """The soft factors of the CaRL reward, each in [0, 1]."""
    lanes = np.where(st.outside_route_lanes, 0.0, 1.0)
    # Below the limit the factor would exceed 1; it is capped so that driving slower earns no bonus.
    speeding = np.clip(1.0 - (st.speed - st.speed_limit) / cfg.speeding_tolerance, 0.0, 1.0)
    ttc = np.where(st.ttc_violation, cfg.ttc_factor, 1.0)
    comfort = 1.0 - cfg.comfort_weight * np.asarray(st.comfort_violations) / cfg.n_comfort_checks
    centring = 1.0 - np.clip(st.lateral / (st.lane_width / 2.0), 0.0, 1.0)
    out = {"route_lanes": lanes, "speeding": speeding, "ttc": ttc, "comfort": comfort, "centring": centring}
    if cfg.light_brake > 0:
        gap = np.maximum(np.nan_to_num(st.hazard_light_gap, posinf=1e6), 0.0)
        allowed = np.sqrt(2.0 * cfg.light_brake * gap)
        out["light"] = np.clip(1.0 - (st.speed - allowed) / cfg.speeding_tolerance, 0.0, 1.0)
    return out


def carl_reward(st: RewardState, cfg: CarlRewardConfig = CarlRewardConfig()) -> np.ndarray:
    """CaRL reward: progress (percent) times the soft factors, minus the terminal penalty."""
    f = carl_factors(st, cfg)
    r = st.progress_pct * f["route_lanes"] * f["speeding"] * f["ttc"] * f["comfort"] * f["centring"]
    if "light" in f:
        r = r * f["light"]
    r = r - cfg.terminal_penalty * (st.terminated & st.collision_or_red_light)
    if cfg.lost_route_penalty:
        r = r - np.where(st.terminated, st.route_left_pct, 0.0)
    return r


def roach_desired_speed(st: RewardState, cfg: RoachRewardConfig = RoachRewardConfig()) -> np.ndarray:
    """Roach's desired speed: the maximum, scaled down linearly over 5 m near the closest hazard."""
    v = np.clip(st.hazard_vehicle_gap - cfg.vehicle_offset, 0.0, 5.0) / 5.0
    lt = np.clip(st.hazard_light_gap - cfg.light_offset, 0.0, 5.0) / 5.0
    return cfg.desired_speed * np.minimum(v, lt)


def roach_reward(st: RewardState, cfg: RoachRewardConfig = RoachRewardConfig()) -> np.ndarray:
    """Roach shaped reward: r_speed + r_position + r_rotation + r_action + r_terminal."""
    v_des = roach_desired_speed(st, cfg)
    r_speed = 1.0 - np.abs(st.speed - v_des) / cfg.speed_scale
    r_position = -st.lateral / 2.0
    r_rotation = -np.abs(st.heading_error)
    r_action = np.where(st.steer_change > cfg.steer_change_threshold, -cfg.steer_change_penalty, 0.0)
    r_terminal = np.where(st.terminated, -1.0 - np.where(st.collision_or_red_light, st.speed, 0.0), 0.0)
    return r_speed + r_position + r_rotation + r_action + r_terminal


def comfort_violations(lon_accel, lat_accel, yaw_rate, yaw_accel, lon_jerk, jerk) -> np.ndarray:
    """Count of violated comfort checks (six checks, see :data:`COMFORT_LIMITS`)."""
    c = COMFORT_LIMITS
    n = ((lon_accel > c["lon_accel_max"]) | (lon_accel < c["lon_accel_min"])).astype(np.int64)
    n += np.abs(lat_accel) > c["lat_accel"]
    n += np.abs(yaw_rate) > c["yaw_rate"]
    n += np.abs(yaw_accel) > c["yaw_accel"]
    n += np.abs(lon_jerk) > c["lon_jerk"]
    n += np.abs(jerk) > c["jerk"]
    return n
