"""Bird's-eye-view raster in CaRL's channel layout, restricted to what the simulator has.

The ego sits at the centre column, ``ego_from_bottom`` pixels above the bottom row, facing up.
Static layers (road, lane markings, speed limit, shoulder) are looked up in the map's world rasters
by nearest neighbour; the route, vehicles and lights are scattered as points into the image. The
geometry of all envs is set up together in numpy; the per-pixel lookup and the per-point writes are
two small compiled loops (numba, GIL released, so that ``BevConfig.threads`` threads render disjoint
sets of envs at once): 4k pixels and about 1k points per env, where numpy needed a dozen [n, H, W]
temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steer.driving.roadmap import LIGHT_GREEN, LIGHT_GREEN_YIELD, LIGHT_RED, LIGHT_YELLOW

BEV_CHANNELS = ("road", "route", "lane_markings", "vehicles", "lights", "stop_lines", "speed_limit", "shoulder")
"""Channel order of the BEV observation.

road 255 on the drivable area; route 255 on the route ahead (lane wide); lane_markings 255 solid /
128 dashed; vehicles 100 + 155 * min(speed / 15 m/s, 1) on each traffic vehicle's box; lights at
stop lines: green 80, yellow 170, red 255; stop_lines 255 at every signalled, stop-sign and yield line;
speed_limit 255 * limit / 30 m/s on the road; shoulder 255 within 1.5 m outside the road."""


@dataclass(frozen=True)
class BevConfig:
    """Size and resolution of the BEV raster."""

    size: int = field(default=64, metadata={"range": "[1, inf)"})
    """Width and height, pixels (CaRL: 256)."""
    pixels_per_meter: float = field(default=1.0, metadata={"range": "(0, inf)"})
    """Resolution (CaRL: 2)."""
    ego_from_bottom: int = 24
    """Rows between the ego and the bottom edge (CaRL: 100 of 256)."""
    route_ahead_m: float = 80.0
    """Length of route drawn ahead of the ego, metres."""
    threads: int = 2
    """Threads that render disjoint sets of envs (the compiled loops release the GIL); 1 renders in the
    caller's thread."""


def _kernels():
    """The compiled loops, imported on the first render (numba is slow to load; it caches the
    compiled code on disk)."""
    import steer.driving._bev_kernels as kernels

    return kernels


class BevRenderer:
    """Renders the BEV of a :class:`~steer.driving.simulator.DrivingSim`'s envs."""

    def __init__(self, sim, cfg: BevConfig = BevConfig()):
        self.sim, self.cfg = sim, cfg
        m = sim.map
        h = w = cfg.size
        ppm = cfg.pixels_per_meter
        rows, cols = np.mgrid[0:h, 0:w]
        self.fwd = ((h - cfg.ego_from_bottom - rows - 0.5) / ppm).ravel()
        self.left = ((w / 2.0 - cols - 0.5) / ppm).ravel()
        # Pixel offsets in raster cells along the ego's forward axis (per row) and left axis (per column).
        self.fwd_rows = ((h - cfg.ego_from_bottom - np.arange(h) - 0.5) / ppm / m.grid_res).astype(np.float32)
        self.left_cols = ((w / 2.0 - np.arange(w) - 0.5) / ppm / m.grid_res).astype(np.float32)
        # Farthest pixel from the ego: nothing beyond it needs drawing.
        self.view_radius = float(np.hypot(np.abs(self.fwd).max(), np.abs(self.left).max())) + 3.0
        self.static32 = np.ascontiguousarray(m.static_layers).view(np.uint32)[..., 0]
        # Stop lines padded per town so that every env gathers [S_max] points.
        towns = m.n_towns
        counts = np.bincount(m.stopline_town, minlength=towns) if len(m.stopline_town) else np.zeros(towns, int)
        s_max = max(1, int(counts.max()))
        self.sl_xy = np.full((towns, s_max, 2), 1e6)  # padding far outside any view (and int32-safe)
        self.sl_light = np.full((towns, s_max), -1, np.int64)
        # Each town's lights once, and each stop-line point's position among them: light states are
        # computed per light, then gathered per point.
        self.town_lights: list[np.ndarray] = []
        self.sl_light_pos = np.zeros((towns, s_max), np.int64)
        for t in range(towns):
            sel = np.flatnonzero(m.stopline_town == t)
            # Connectors leaving one lane share its stop line: draw each point once.
            key = np.column_stack([np.round(m.stopline_pts[sel] * 4), m.stopline_light[sel]])
            _, first = np.unique(key, axis=0, return_index=True)
            sel = sel[np.sort(first)]
            self.sl_xy[t, : len(sel)] = m.stopline_pts[sel]
            self.sl_light[t, : len(sel)] = m.stopline_light[sel]
            lights, pos = np.unique(self.sl_light[t], return_inverse=True)
            self.town_lights.append(lights)
            self.sl_light_pos[t] = pos.ravel()
        l_max = max(len(x) for x in self.town_lights)
        self.town_light_ids = np.full((towns, l_max), -1, np.int64)
        for t, lights in enumerate(self.town_lights):
            self.town_light_ids[t, : len(lights)] = lights
        self._pool = None
        # Sample points inside a unit box, spaced at most half a pixel.
        step = 0.5 / ppm
        gl = np.linspace(-0.5, 0.5, max(2, int(np.ceil(sim.cfg.vehicle_length / step)) + 1))
        gw = np.linspace(-0.5, 0.5, max(2, int(np.ceil(sim.cfg.vehicle_width / step)) + 1))
        a, b = np.meshgrid(gl, gw)
        self.box_u, self.box_v = a.ravel(), b.ravel()
        self.route_step = min(1.0, 0.7 / ppm)
        self.route_offsets = np.arange(-1.4, 1.4 + 1e-9, 0.7 / ppm)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return (len(BEV_CHANNELS), self.cfg.size, self.cfg.size)

    def render(self, idx: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """BEV uint8 [n, C, H, W] of envs ``idx`` (all when None)."""
        idx = np.arange(self.sim.num_envs) if idx is None else np.asarray(idx, np.int64)
        if out is None:
            out = np.empty((len(idx),) + self.shape, np.uint8)
        parts = self.cfg.threads if len(idx) >= 64 else 1
        if parts <= 1:
            self._render(idx, out)
            return out
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(parts, thread_name_prefix="bev")
        bounds = np.linspace(0, len(idx), parts + 1).astype(int)
        jobs = [self._pool.submit(self._render, idx[a:b], out[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        for j in jobs:
            j.result()
        return out

    def _render(self, idx: np.ndarray, out: np.ndarray) -> None:
        sim, cfg, m = self.sim, self.cfg, self.sim.map
        n = len(idx)
        _, h, w = self.shape
        ex, ey, eyaw = sim.x[idx], sim.y[idx], sim.yaw[idx]
        # Raster cell of every pixel: per-env origin + per-row term + per-column term (float32, grid units).
        town_i = sim.town[idx]
        _, gh, gw = m.sdf.shape
        c = np.cos(eyaw).astype(np.float32)
        s = np.sin(eyaw).astype(np.float32)
        gx = ((ex - m.grid_origin[town_i, 0]) / m.grid_res).astype(np.float32)
        gy = ((ey - m.grid_origin[town_i, 1]) / m.grid_res).astype(np.float32)
        rx = gx[:, None] + c[:, None] * self.fwd_rows
        ry = gy[:, None] + s[:, None] * self.fwd_rows
        cx = -s[:, None] * self.left_cols
        cy = c[:, None] * self.left_cols
        town_off = (town_i * (gh * gw)).astype(np.int64)
        kern = _kernels()
        kern.gather_static(self.static32.reshape(-1), town_off, np.argsort(town_off, kind="stable"), rx, ry, cx, cy,
                           gw, gh, out)
        ego_row, ego_col = np.float32(h - cfg.ego_from_bottom), np.float32(w / 2.0)
        ppm = np.float32(cfg.pixels_per_meter)

        # Route ahead, lane-wide: points along the route shifted sideways.
        pool = sim.pool
        r = sim.route[idx]
        k = int(min(cfg.route_ahead_m, self.view_radius) / self.route_step)
        kern.scatter_route(out, 1, np.uint8(255), r, sim.s[idx] / pool.spacing[r], self.route_step / pool.spacing[r],
                           -4, k, pool.pts, pool.heading, pool.n[r], self.route_offsets, ex, ey, c, s, ego_row,
                           ego_col, ppm)

        # Road users: sample points of each box, the value encodes speed.
        kern.scatter_boxes(out, 3, sim.nx[idx], sim.ny[idx], sim.nyaw[idx], sim.n_len[idx], sim.n_wid[idx],
                           sim.n_v[idx], self.box_u, self.box_v, ex, ey, c, s, ego_row, ego_col, ppm)

        # Lights and stop lines: one state per light of the town, gathered per stop-line point.
        sx, sy = self.sl_xy[town_i, :, 0], self.sl_xy[town_i, :, 1]
        st_light = self._light_states(idx, self.town_light_ids[town_i])
        st = np.take_along_axis(st_light, self.sl_light_pos[town_i], axis=1)
        st = np.where(self.sl_light[town_i] >= 0, st, -1)
        lval = np.select([(st == LIGHT_GREEN) | (st == LIGHT_GREEN_YIELD), st == LIGHT_YELLOW, st == LIGHT_RED], [80, 170, 255],
                         0).astype(np.uint8)
        kern.scatter_points(out, 4, sx, sy, lval, ex, ey, c, s, ego_row, ego_col, ppm)
        kern.scatter_points(out, 5, sx, sy, np.full_like(lval, 255), ex, ey, c, s, ego_row, ego_col, ppm)

    def _light_states(self, idx, light):
        sim, m = self.sim, self.sim.map
        li = np.maximum(light, 0)
        off = np.take_along_axis(sim.group_offset[idx], m.light_group[li], axis=1)
        st = m.light_state(li, sim.t[idx][:, None], off)
        return np.where(light >= 0, st, -1)


_COLORS = np.array([
    [60, 60, 60],     # road
    [40, 120, 220],   # route
    [230, 230, 230],  # lane markings
    [240, 160, 30],   # vehicles
    [0, 0, 0],        # lights (coloured by state below)
    [200, 200, 200],  # stop lines
    [0, 0, 0],        # speed limit (not drawn)
    [110, 90, 70],    # shoulder
], np.float32)


def bev_to_rgb(bev: np.ndarray, ego_from_bottom: int | None = None, ego_size_px: tuple[int, int] = (4, 2)) -> np.ndarray:
    """An RGB picture [H, W, 3] of one BEV [C, H, W] for people (the ego is drawn in green)."""
    c, h, w = bev.shape
    img = np.full((h, w, 3), 20, np.float32)
    for ch in (7, 0, 1, 2, 5, 3):
        mask = bev[ch] > 0
        img[mask] = _COLORS[ch]
    lt = bev[4]
    img[lt == 80] = [0, 200, 0]
    img[lt == 170] = [230, 210, 0]
    img[lt == 255] = [230, 0, 0]
    if ego_from_bottom is not None:
        r0 = h - ego_from_bottom
        el, ew = ego_size_px
        img[max(r0 - el // 2, 0): r0 + el // 2 + 1, w // 2 - ew // 2: w // 2 + ew // 2 + 1] = [40, 220, 80]
    return img.astype(np.uint8)
