"""The structured (vector) observation: what a driver needs, as floats in the ego frame, for all envs at once.

Ego frame: x forward, y to the left of the ego's centre, metres, before scaling. Every field is
scaled to roughly [-1, 1] by a fixed constant (no running statistics), so that an exported policy
needs no normalizer. Groups, in order (the names are in :meth:`VectorObservation.field_names`):

``ego`` (5)
    ``speed`` (/10 m/s), ``lon_accel`` (/5 m/s², last step), ``yaw_rate`` (rad/s), ``speed_limit``
    (/10 m/s, here), ``speed_limit_ahead`` (/10 m/s, 20 m ahead on the route). Not the last action:
    see :data:`steer.driving.env.MEASUREMENTS` (the critic gets it as a value-only input).
``route`` (2 P + 1)
    ``route.x{i}``, ``route.y{i}``: the route centre line at arc lengths ``route_ahead_m`` ahead of
    the ego's projection (/20 m; points past the end repeat the end), then ``lane_width`` (/4 m).
``map`` (2 G)
    at the grid points ``map_forward_m`` × ``map_left_m`` around the ego: ``map.sdf{i}``, the signed
    distance to the drivable area's edge (negative inside, clipped to ±3 m, /3), and ``map.route{i}``,
    1 on a carriageway of the route or in a junction, else 0 (oncoming lanes, other roads, off-road).
``junction`` (8)
    the route's next junction entry (stop line): ``junction.distance`` (bumper to line, /50 m, 2 when
    none within 100 m); a one-hot of its control ``junction.none`` (no entry in range, or the
    priority road with nobody to yield to), ``junction.green`` (protected), ``junction.yellow``,
    ``junction.red``, ``junction.stop`` (stop sign), ``junction.yield`` (yield sign, permissive
    green, or a turn across the priority road's traffic); and ``junction.clear``: 1 when the ego may
    enter now by the lights and the right of way (a stop sign needs the stop first), else 0.
``goal`` (1)
    ``goal.distance``: route metres left, /100, capped at 5.
``users`` (K × (8 + len(ROAD_USER_KINDS)))
    the K nearest road users within ``user_radius_m``, nearest first, each: ``present`` (1/0; the
    other fields are 0 when absent), ``x``, ``y`` (/20 m), ``cos``, ``sin`` of its heading relative
    to the ego's, ``vx``, ``vy`` (its velocity in the ego frame, /10 m/s), ``length``, ``width``
    (/5 m), a one-hot over :data:`ROAD_USER_KINDS`, and where it stands against the ego's route (its
    nearest route point among ``route_frame_m`` around the ego): ``along`` (route metres from the ego's
    projection to its own, /20, in [-1, 3]), ``across`` (its centre's signed offset from the route's
    centre line, left positive, /4 m, in [-3, 3]) and ``v_along``, ``v_across`` (its velocity along and
    across the route there, /10 m/s), and ``gap``: the room between its box and the route's centre line
    (``|across|`` less its half extent across the route, /4 m, in [-3, 3]; negative when it covers the
    centre line), which says directly how far to shift past a parked car. The route frame makes "in my path, and how soon" a few linear
    pieces on a curved road; in the ego frame alone the policy imitated the scripted driver's braking
    for pedestrians and cut-ins poorly (it held speed where the driver braked fully).

Road users come from :func:`road_users`: the traffic vehicles, the pedestrians (waiting at the kerb
or crossing) and the static obstacles (parked cars, road works); a new kind joins by adding its
arrays there with its kind index: the slot layout and the network stay the same. The layout grew
from 212 floats (``light``, 5 fields, before pedestrians and stop signs) to 215 (``junction``, 8) and
to 253 (the route frame of each road user, 5 fields; the last action left the ``ego`` group);
an exported policy's spec records the size it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from steer.driving.roadmap import (
    CONTROL_NONE, CONTROL_STOP, CONTROL_YIELD, CW_JUNCTION, LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED, LIGHT_YELLOW,
)

ROAD_USER_KINDS = ("vehicle", "pedestrian", "obstacle")
"""Kinds of road users, in the order of the one-hot in each ``users`` slot."""

JUNCTION_FIELDS = ("distance", "none", "green", "yellow", "red", "stop", "yield", "clear")
"""Fields of the ``junction`` group."""

USER_FIELDS = ("present", "x", "y", "cos", "sin", "vx", "vy", "length", "width", *(f"is_{k}" for k in ROAD_USER_KINDS),
               "along", "across", "v_along", "v_across", "gap")
"""Fields of one road-user slot."""


@dataclass(frozen=True)
class VectorObsConfig:
    """Layout of the vector observation."""

    route_ahead_m: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 36.0, 43.0,
                                        50.0, 60.0, 70.0)
    """Arc lengths ahead of the ego's route projection at which the route is sampled, metres."""
    map_forward_m: tuple[float, ...] = field(default=(-4.0, 0.0, 4.0, 8.0, 14.0, 20.0, 28.0),
                                             metadata={"range": "(-inf, inf)"})
    """Forward offsets of the map sample grid, metres."""
    map_left_m: tuple[float, ...] = field(default=(-7.0, -3.5, 0.0, 3.5, 7.0), metadata={"range": "(-inf, inf)"})
    """Leftward offsets of the map sample grid, metres."""
    max_users: int = 8
    """Road-user slots (K)."""
    user_radius_m: float = 50.0
    """Road users farther than this are not observed, metres."""
    light_range_m: float = 100.0
    """Junction entries farther ahead than this count as none, metres."""
    route_frame_m: tuple[float, float] = field(default=(-8.0, 72.0), metadata={"range": "(-inf, inf)"})
    """Route span (metres behind and ahead of the ego's projection) on which road users are projected
    for their ``along`` / ``across`` fields."""


class RoadUsers(NamedTuple):
    """Every road user of every env, arrays [N, U] (world frame; speed along the heading)."""

    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    length: np.ndarray
    width: np.ndarray
    kind: np.ndarray
    """Index into :data:`ROAD_USER_KINDS`."""


def road_users(sim, idx: np.ndarray) -> RoadUsers:
    """The road users of envs ``idx``: traffic vehicles, pedestrians and static obstacles, concatenated."""
    parts = (
        (sim.nx, sim.ny, sim.nyaw, sim.n_v, sim.n_len, sim.n_wid, 0),
        (sim.px, sim.py, sim.pyaw, sim.pv, sim.p_size, sim.p_size, 1),
        (sim.ox, sim.oy, sim.oyaw, np.zeros(sim.ox.shape), sim.olen, sim.owid, 2),
    )
    cols = [np.concatenate([p[i][idx] for p in parts], 1) for i in range(6)]
    kind = np.concatenate([np.full(p[0][idx].shape, p[6], np.int64) for p in parts], 1)
    return RoadUsers(*cols, kind)


class VectorObservation:
    """Computes the vector observation of a :class:`~steer.driving.simulator.DrivingSim`'s envs."""

    def __init__(self, sim, cfg: VectorObsConfig = VectorObsConfig()):
        self.sim, self.cfg = sim, cfg
        gf, gl = np.meshgrid(np.asarray(cfg.map_forward_m), np.asarray(cfg.map_left_m), indexing="ij")
        self._grid_f, self._grid_l = gf.ravel(), gl.ravel()
        self._ahead = np.asarray(cfg.route_ahead_m, np.float64)
        names = self.field_names()
        self.size = len(names)
        self.slices = {}
        for g in ("ego", "route", "map", "junction", "goal", "users"):
            pos = [i for i, n in enumerate(names) if n.split(".")[0] == g]
            self.slices[g] = slice(pos[0], pos[-1] + 1)

    def field_names(self) -> list[str]:
        """Name of every float of the observation, in order (see the module docstring)."""
        cfg = self.cfg
        names = [f"ego.{k}" for k in ("speed", "lon_accel", "yaw_rate", "speed_limit", "speed_limit_ahead")]
        for i in range(len(cfg.route_ahead_m)):
            names += [f"route.x{i}", f"route.y{i}"]
        names.append("route.lane_width")
        g = len(cfg.map_forward_m) * len(cfg.map_left_m)
        names += [f"map.sdf{i}" for i in range(g)] + [f"map.route{i}" for i in range(g)]
        names += [f"junction.{k}" for k in JUNCTION_FIELDS] + ["goal.distance"]
        for k in range(cfg.max_users):
            names += [f"users.{k}.{f}" for f in USER_FIELDS]
        return names

    def __call__(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Observations float32 [n, size] of envs ``idx`` (all when None)."""
        sim, cfg, pool, m = self.sim, self.cfg, self.sim.pool, self.sim.map
        idx = np.arange(sim.num_envs) if idx is None else np.asarray(idx, np.int64)
        n = len(idx)
        out = np.zeros((n, self.size), np.float32)
        x, y, yaw, v = sim.x[idx], sim.y[idx], sim.yaw[idx], sim.v[idx]
        c, s = np.cos(yaw), np.sin(yaw)
        r, seg, town = sim.route[idx], sim.seg[idx], sim.town[idx]
        sp = pool.spacing[r]
        last = pool.n[r] - 1

        def to_ego(px, py):
            dx, dy = px - x[:, None], py - y[:, None]
            return dx * c[:, None] + dy * s[:, None], -dx * s[:, None] + dy * c[:, None]

        # ego
        ahead_i = np.minimum(((sim.s[idx] + 20.0) / sp).astype(np.int64), last)
        ego = out[:, self.slices["ego"]]
        ego[:, 0] = v / 10.0
        ego[:, 1] = sim.prev_lon_acc[idx] / 5.0
        ego[:, 2] = sim.prev_yaw_rate[idx]
        ego[:, 3] = pool.speed_limit[r, seg] / 10.0
        ego[:, 4] = pool.speed_limit[r, ahead_i] / 10.0

        # route ahead (linear interpolation between the ~1 m route points)
        f = np.minimum((sim.s[idx][:, None] + self._ahead[None, :]) / sp[:, None], last[:, None].astype(np.float64))
        i0 = np.minimum(f.astype(np.int64), np.maximum(last - 1, 0)[:, None])
        fr = (f - i0)[..., None]
        p = pool.pts[r[:, None], i0] * (1.0 - fr) + pool.pts[r[:, None], i0 + 1] * fr
        rx, ry = to_ego(p[..., 0], p[..., 1])
        route = out[:, self.slices["route"]]
        route[:, 0:-1:2] = rx / 20.0
        route[:, 1:-1:2] = ry / 20.0
        route[:, -1] = m.lane_width[pool.point_lane[r, seg]] / 4.0

        # map samples around the ego
        gx = x[:, None] + c[:, None] * self._grid_f - s[:, None] * self._grid_l
        gy = y[:, None] + s[:, None] * self._grid_f + c[:, None] * self._grid_l
        tt = np.broadcast_to(town[:, None], gx.shape)
        gi = m.grid_index(tt, gx, gy)
        sdf = m.sdf.reshape(-1)[gi]
        cw = m.carriageway_grid.reshape(-1)[gi]
        on_route = np.where(cw >= 0, pool.carriageway_mask[r[:, None], np.maximum(cw, 0)], cw == CW_JUNCTION)
        g = len(self._grid_f)
        mp = out[:, self.slices["map"]]
        mp[:, :g] = np.clip(sdf, -3.0, 3.0) / 3.0
        mp[:, g:] = on_route

        # next junction entry on the route
        conn, ctl, st, dist, clear = (a[idx] for a in sim.next_junction())
        has = dist < cfg.light_range_m
        must_yield = (ctl == CONTROL_YIELD) | (st == LIGHT_GREEN_YIELD) | (
            (ctl == CONTROL_NONE) & (st < 0) & m.lane_yields[np.maximum(conn, 0)].any(-1))
        jn = out[:, self.slices["junction"]]
        jn[:, 0] = np.where(has, np.clip(dist, 0.0, cfg.light_range_m) / 50.0, 2.0)
        jn[:, 2] = has & (st == LIGHT_GREEN)
        jn[:, 3] = has & (st == LIGHT_YELLOW)
        jn[:, 4] = has & (st == LIGHT_RED)
        jn[:, 5] = has & (ctl == CONTROL_STOP)
        jn[:, 6] = has & must_yield & ~jn[:, 2:6].any(1)
        jn[:, 1] = ~jn[:, 2:7].any(1)
        jn[:, 7] = ~has | clear
        out[:, self.slices["goal"]][:, 0] = np.minimum((pool.length[r] - sim.s[idx]) / 100.0, 5.0)

        # nearest road users
        u = road_users(sim, idx)
        ux, uy = to_ego(u.x, u.y)
        d2 = ux * ux + uy * uy
        k = cfg.max_users
        if d2.shape[1] > k:  # the k nearest, then in order
            near = np.argpartition(d2, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(near, np.argsort(np.take_along_axis(d2, near, 1), axis=1), 1)
        else:
            order = np.argsort(d2, axis=1)
        take = lambda a: np.take_along_axis(a, order, 1)  # noqa: E731
        ux, uy, d2 = take(ux), take(uy), take(d2)
        rel = take(u.yaw) - yaw[:, None]
        spd = take(u.speed)
        present = d2 < cfg.user_radius_m**2
        nf = len(USER_FIELDS)
        slots = np.zeros((n, k, nf), np.float32)
        kk = order.shape[1]
        slots[:, :kk, 0] = present
        slots[:, :kk, 1] = ux / 20.0
        slots[:, :kk, 2] = uy / 20.0
        slots[:, :kk, 3] = np.cos(rel)
        slots[:, :kk, 4] = np.sin(rel)
        slots[:, :kk, 5] = spd * np.cos(rel) / 10.0
        slots[:, :kk, 6] = spd * np.sin(rel) / 10.0
        slots[:, :kk, 7] = take(u.length) / 5.0
        slots[:, :kk, 8] = take(u.width) / 5.0
        kind = take(u.kind)
        nk = len(ROAD_USER_KINDS)
        slots[:, :kk, 9:9 + nk] = kind[..., None] == np.arange(nk)
        # In the route frame: the nearest route point (about 1 m apart) in the span around the ego.
        lo, hi = (np.floor(np.asarray(cfg.route_frame_m) / sp[:, None]).astype(np.int64)).T
        w = int((hi - lo).max()) + 1
        ri = np.clip(seg[:, None] + lo[:, None] + np.arange(w), 0, last[:, None])  # [n, W]
        px, py, ph = pool.pts[r[:, None], ri, 0], pool.pts[r[:, None], ri, 1], pool.heading[r[:, None], ri]
        wx, wy = take(u.x), take(u.y)
        j = np.argmin((wx[:, :, None] - px[:, None, :]) ** 2 + (wy[:, :, None] - py[:, None, :]) ** 2, axis=2)  # [n, K]
        pick = lambda a: np.take_along_axis(a, j, 1)  # noqa: E731  (route arrays [n, W] at each user's point)
        jx, jy, jh = wx - pick(px), wy - pick(py), pick(ph)
        ch, sh = np.cos(jh), np.sin(jh)
        across = -jx * sh + jy * ch
        uyaw = take(u.yaw)
        vx_w, vy_w = spd * np.cos(uyaw), spd * np.sin(uyaw)
        rel_h = uyaw - jh
        half_across = 0.5 * (np.abs(np.cos(rel_h)) * take(u.width) + np.abs(np.sin(rel_h)) * take(u.length))
        a0 = 9 + nk
        slots[:, :kk, a0] = np.clip((pick(ri) * sp[:, None] - sim.s[idx][:, None]) / 20.0, -1.0, 3.0)
        slots[:, :kk, a0 + 1] = np.clip(across / 4.0, -3.0, 3.0)
        slots[:, :kk, a0 + 2] = (vx_w * ch + vy_w * sh) / 10.0
        slots[:, :kk, a0 + 3] = (-vx_w * sh + vy_w * ch) / 10.0
        slots[:, :kk, a0 + 4] = np.clip((np.abs(across) - half_across) / 4.0, -3.0, 3.0)
        slots[:, :kk] *= present[..., None]
        out[:, self.slices["users"]] = slots.reshape(n, -1)
        return out
