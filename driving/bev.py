"""Bird's-eye-view raster in CaRL's channel layout, restricted to what the simulator has.

The ego sits at the centre column, ``ego_from_bottom`` pixels above the bottom row, facing up.
Static layers (road, lane markings, speed limit, shoulder) are looked up in the map's world rasters
by nearest neighbour; the route, vehicles and lights are scattered as points into the image. All
envs are rendered together with flat index arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steer.driving.roadmap import LIGHT_GREEN, LIGHT_RED, LIGHT_YELLOW

BEV_CHANNELS = ("road", "route", "lane_markings", "vehicles", "lights", "stop_lines", "speed_limit", "shoulder")
"""Channel order of the BEV observation.

road 255 on the drivable area; route 255 on the route ahead (lane wide); lane_markings 255 solid /
128 dashed; vehicles 100 + 155 * min(speed / 15 m/s, 1) on each traffic vehicle's box; lights at
stop lines: green 80, yellow 170, red 255; stop_lines 255 at every signalled stop line;
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
        self.fwd_g = (self.fwd / m.grid_res).astype(np.float32)
        self.left_g = (self.left / m.grid_res).astype(np.float32)
        # Farthest pixel from the ego: nothing beyond it needs drawing.
        self.view_radius = float(np.hypot(np.abs(self.fwd).max(), np.abs(self.left).max())) + 3.0
        self.static32 = np.ascontiguousarray(m.static_layers).view(np.uint32)[..., 0]
        # Stop lines padded per town so that every env gathers [S_max] points.
        towns = m.n_towns
        counts = np.bincount(m.stopline_town, minlength=towns) if len(m.stopline_town) else np.zeros(towns, int)
        s_max = max(1, int(counts.max()))
        self.sl_xy = np.full((towns, s_max, 2), 1e9)
        self.sl_light = np.full((towns, s_max), -1, np.int64)
        for t in range(towns):
            sel = np.flatnonzero(m.stopline_town == t)
            # Connectors leaving one lane share its stop line: draw each point once.
            key = np.column_stack([np.round(m.stopline_pts[sel] * 4), m.stopline_light[sel]])
            _, first = np.unique(key, axis=0, return_index=True)
            sel = sel[np.sort(first)]
            self.sl_xy[t, : len(sel)] = m.stopline_pts[sel]
            self.sl_light[t, : len(sel)] = m.stopline_light[sel]
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
        sim, cfg, m = self.sim, self.cfg, self.sim.map
        idx = np.arange(sim.num_envs) if idx is None else np.asarray(idx, np.int64)
        n = len(idx)
        c_n, h, w = self.shape
        if out is None:
            out = np.empty((n, c_n, h, w), np.uint8)
        ex, ey, eyaw = sim.x[idx], sim.y[idx], sim.yaw[idx]
        # Raster cell coordinates of every pixel, in float32 and grid units to keep the pass cheap.
        town_i = sim.town[idx]
        _, gh, gw = m.sdf.shape
        c = np.cos(eyaw).astype(np.float32)[:, None]
        s = np.sin(eyaw).astype(np.float32)[:, None]
        gx = ((ex - m.grid_origin[town_i, 0]) / m.grid_res).astype(np.float32)[:, None]
        gy = ((ey - m.grid_origin[town_i, 1]) / m.grid_res).astype(np.float32)[:, None]
        fx = c * self.fwd_g
        fx -= s * self.left_g
        fx += gx
        fy = s * self.fwd_g
        fy += c * self.left_g
        fy += gy
        ix = fx.astype(np.int32)
        iy = fy.astype(np.int32)
        np.clip(ix, 0, gw - 1, out=ix)
        np.clip(iy, 0, gh - 1, out=iy)
        iy *= gw
        iy += ix
        flat_idx = iy.astype(np.int64)
        flat_idx += (town_i * (gh * gw))[:, None]
        packed = self.static32.reshape(-1)[flat_idx]
        layers = packed.view(np.uint8).reshape(n, h, w, 4)
        out[:, 0] = layers[..., 0]
        out[:, 2] = layers[..., 1]
        out[:, 6] = layers[..., 2]
        out[:, 7] = layers[..., 3]
        out[:, 1] = 0
        out[:, 3:6] = 0
        flat = out.reshape(-1)
        base = np.arange(n) * (c_n * h * w)

        def scatter(channel: int, px, py, value, env_rows):
            # px, py world points [n, P]; value scalar or [n, P].
            dx, dy = px - ex[env_rows][:, None], py - ey[env_rows][:, None]
            cc, ss = np.cos(eyaw[env_rows])[:, None], np.sin(eyaw[env_rows])[:, None]
            f = dx * cc + dy * ss
            lft = -dx * ss + dy * cc
            row = np.floor(h - cfg.ego_from_bottom - f * cfg.pixels_per_meter).astype(np.int64)
            col = np.floor(w / 2.0 - lft * cfg.pixels_per_meter).astype(np.int64)
            ok = (row >= 0) & (row < h) & (col >= 0) & (col < w)
            fi = base[env_rows][:, None] + channel * h * w + row * w + col
            vals = np.broadcast_to(value, fi.shape)
            flat[fi[ok]] = vals[ok]

        rows_all = np.arange(n)
        # Route ahead, lane-wide: points along the route shifted sideways.
        pool = sim.pool
        r = sim.route[idx]
        k = int(min(cfg.route_ahead_m, self.view_radius) / self.route_step)
        fpos = sim.s[idx][:, None] / pool.spacing[r][:, None] + np.arange(-4, k)[None, :] * (
            self.route_step / pool.spacing[r][:, None])
        fpos = np.clip(fpos, 0, (pool.n[r] - 1)[:, None].astype(np.float64))
        i0 = np.minimum(fpos.astype(np.int64), (pool.n[r] - 2)[:, None])
        fr = (fpos - i0)[..., None]
        p = pool.pts[r[:, None], i0] * (1 - fr) + pool.pts[r[:, None], i0 + 1] * fr
        hd = pool.heading[r[:, None], i0]
        nx, ny = -np.sin(hd), np.cos(hd)
        o = self.route_offsets
        rx = (p[..., 0][..., None] + nx[..., None] * o).reshape(n, -1)
        ry = (p[..., 1][..., None] + ny[..., None] * o).reshape(n, -1)
        scatter(1, rx, ry, np.uint8(255), rows_all)

        # Vehicles: sample points of each box, value encodes speed.
        vx, vy, vyaw = sim.nx[idx], sim.ny[idx], sim.nyaw[idx]
        vl, vw = sim.n_len[idx], sim.n_wid[idx]
        cu, su = np.cos(vyaw)[..., None], np.sin(vyaw)[..., None]
        lu = self.box_u * vl[..., None]
        lv = self.box_v * vw[..., None]
        bx = (vx[..., None] + cu * lu - su * lv).reshape(n, -1)
        by = (vy[..., None] + su * lu + cu * lv).reshape(n, -1)
        val = (100 + 155 * np.minimum(sim.n_v[idx] / 15.0, 1.0)).astype(np.uint8)
        val = np.repeat(val, len(self.box_u), axis=1)
        scatter(3, bx, by, val, rows_all)

        # Lights and stop lines.
        sx, sy = self.sl_xy[sim.town[idx], :, 0], self.sl_xy[sim.town[idx], :, 1]
        lid = self.sl_light[sim.town[idx]]
        st = self._light_states(idx, lid)
        lval = np.select([st == LIGHT_GREEN, st == LIGHT_YELLOW, st == LIGHT_RED], [80, 170, 255], 0).astype(np.uint8)
        scatter(4, sx, sy, lval, rows_all)
        scatter(5, sx, sy, np.uint8(255), rows_all)
        return out

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
