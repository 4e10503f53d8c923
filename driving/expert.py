"""The scripted driver: pure pursuit on the route, speed control with IDM, obeying the junction rules.

It reads the simulator's privileged state (route, traffic, pedestrians, obstacles, lights, right of
way) and returns actions [N, 2] for all envs at once: it stops at red lights and stop signs, yields
where the right of way says so, lets pedestrians cross, and shifts sideways past obstacles that stand
partly in its lane. It is the baseline of the PPO work and a demonstration source for BC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steer.driving.geometry import wrap_angle
from steer.driving.roadmap import CONTROL_YIELD, LIGHT_YELLOW
from steer.driving.routes import min_turn_radius
from steer.driving.simulator import DrivingSim, idm_accel


@dataclass(frozen=True)
class ExpertConfig:
    """Gains of the scripted driver."""

    lookahead_min: float = 4.0
    """Shortest pure-pursuit look-ahead, metres."""
    lookahead_gain: float = 0.6
    """Look-ahead grows by this many seconds of speed ..."""
    tight_lookahead_gain: float = 0.3
    """... or by this many near a lane tighter than ``tight_radius`` times the car's turning circle
    (SUMO's tight junction turns: a long look-ahead leaves them 0.6-0.8 m wide, into the other lane)."""
    tight_radius: float = 1.4
    """Lanes tighter than this many turning circles count as tight (generated towns have none)."""
    speed_margin: float = 0.97
    """Share of the speed limit (and comfortable speed) aimed for."""
    yellow_brake: float = 3.5
    """A yellow light is run only if stopping before its line would need more than this, m/s^2."""
    stop_margin: float = 1.0
    """Distance kept before a stop line, metres."""
    speed_gain: float = 1.5
    """Proportional gain from speed error to acceleration, 1/s."""
    yield_speed: float = 4.0
    """Speed at a yield sign's line, m/s."""
    shift_ramp: float = 10.0
    """Route length over which the path shifts sideways to pass an obstacle, metres."""
    passing_speed: float = 7.0
    """Speed while passing an obstacle, m/s."""


class ExpertDriver:
    """Route follower over a :class:`DrivingSim` (vectorized over its envs)."""

    def __init__(self, sim: DrivingSim, cfg: ExpertConfig = ExpertConfig()):
        self.sim = sim
        self.cfg = cfg
        self.reacting = np.zeros(sim.num_envs, bool)
        """After :meth:`act`: the envs whose driver reacts to something on its route (passes a static
        obstacle, or brakes harder than 0.5 m/s² for a vehicle or a pedestrian in its way)."""

    def act(self) -> np.ndarray:
        """Actions [N, 2] = [steer, accel] in [-1, 1] for the sim's current state."""
        sim, cfg, scfg, pool = self.sim, self.cfg, self.sim.cfg, self.sim.pool
        r = sim.route
        n = sim.num_envs
        # Pure pursuit from the rear axle to a route point ahead.
        lr = scfg.wheelbase / 2.0
        rx = sim.x - lr * np.cos(sim.yaw)
        ry = sim.y - lr * np.sin(sim.yaw)
        sp = pool.spacing[r]
        near = np.minimum(np.maximum(sim.seg[:, None] + np.arange(-6, 16), 0), (pool.n[r] - 1)[:, None])
        circle = min_turn_radius(scfg.wheelbase, scfg.max_steer, margin=1.0)
        tight = (sim.map.lane_min_radius[pool.point_lane[r[:, None], near]] < cfg.tight_radius * circle).any(1)
        ld = cfg.lookahead_min + np.where(tight, cfg.tight_lookahead_gain, cfg.lookahead_gain) * sim.v
        target_s = sim.s + ld
        ti = np.minimum((target_s / sp).astype(np.int64), pool.n[r] - 1)
        tx, ty = pool.pts[r, ti, 0], pool.pts[r, ti, 1]
        # Pass obstacles standing partly in the lane: the target point moves sideways near them.
        ob_s, edge = pool.obstacle_s[r], pool.obstacle_edge[r]
        present = np.isfinite(ob_s[..., 0])
        half = sim.length[:, None] / 2.0
        need = sim._obstacle_shift(np.where(present, 0, -1), sim.width[:, None] / 2.0, edge)
        q = (ti * sp)[:, None]
        ramp = (np.clip((q - (ob_s[..., 0] - half - 2.0 - cfg.shift_ramp)) / cfg.shift_ramp, 0.0, 1.0)
                * np.clip(((ob_s[..., 1] + half + 4.0 + cfg.shift_ramp) - q) / cfg.shift_ramp, 0.0, 1.0))
        passable = present & (np.abs(need) <= scfg.max_shift)
        shift = np.where(passable, need * ramp, 0.0).sum(1)
        s_now = sim.s[:, None]
        passing = (passable & (s_now > ob_s[..., 0] - half - 2.0 * cfg.shift_ramp) & (s_now < ob_s[..., 1] + half)).any(1)
        th = pool.heading[r, ti]
        tx, ty = tx - np.sin(th) * shift, ty + np.cos(th) * shift
        alpha = wrap_angle(np.arctan2(ty - ry, tx - rx) - sim.yaw)
        dist = np.maximum(np.hypot(tx - rx, ty - ry), 1.0)
        delta = np.arctan(2.0 * scfg.wheelbase * np.sin(alpha) / dist)
        steer = np.clip(delta / scfg.max_steer, -1.0, 1.0)

        # Speed: comfortable route speed a little ahead, IDM behind the nearest vehicle or red light.
        ci = np.minimum(sim.seg + 2, pool.n[r] - 1)
        v_target = np.maximum(cfg.speed_margin * np.minimum(pool.comfort_speed[r, ci], pool.speed_limit[r, ci]), 1.0)
        j, has = sim._next_entry()
        yield_sign = has & (pool.stop_control[r, j] == CONTROL_YIELD)
        front = pool.stop_s[r, j] - sim.s - sim.length / 2.0
        v_yield = np.sqrt(cfg.yield_speed**2 + 2.0 * scfg.idm_brake * np.maximum(front, 0.0))
        v_target = np.where(yield_sign, np.minimum(v_target, v_yield), v_target)
        v_target = np.where(passing, np.minimum(v_target, cfg.passing_speed), v_target)
        vgap, vspeed, lgap, lstate = sim.route_hazards()
        can_stop = lgap - cfg.stop_margin > sim.v**2 / (2.0 * cfg.yellow_brake)
        stop_for_light = np.isfinite(lgap) & ((lstate != LIGHT_YELLOW) | can_stop)
        lg = np.where(stop_for_light, np.maximum(lgap - cfg.stop_margin, 0.05), np.inf)
        gap = np.minimum(vgap, lg)
        lead_v = np.where(vgap <= lg, vspeed, 0.0)
        a_idm = idm_accel(sim.v, v_target, gap, lead_v, scfg)
        a_p = cfg.speed_gain * (v_target - sim.v)
        a = np.minimum(np.where(np.isfinite(gap), a_idm, a_p), a_p)
        # Reacting to something on the route: passing a static obstacle, or braking for a road user.
        self.reacting = passing | (np.isfinite(vgap) & (vgap <= lg) & (a < -0.5))
        # Hold still when stopped close behind an obstacle.
        a = np.where((gap < 1.0) & (sim.v < 0.5), -scfg.max_brake, a)
        accel = np.where(a >= 0, a / scfg.max_accel, a / scfg.max_brake)
        out = np.stack([steer, np.clip(accel, -1.0, 1.0)], 1).astype(np.float32)
        return out.reshape(n, 2)
