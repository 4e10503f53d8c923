"""The BEV renderer's inner loops, compiled with numba (see :mod:`steer.driving.bev`): the static
layers' per-pixel lookup, and the route, road-user boxes and stop-line points written pixel by pixel
through one ``_put``.

All write into ``out`` uint8 [n, C, H, W] and release the GIL. Their arithmetic is the renderer's
float32 geometry, step for step, so that a pixel lands where the geometry says whatever the
number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def gather_static(static32, town_off, order, rx, ry, cx, cy, gw, gh, out):  # pragma: no cover (compiled)
    """Static channels (0 road, 2 lane markings, 6 speed limit, 7 shoulder) of every pixel by nearest
    neighbour in the town rasters, and the point channels (1, 3, 4, 5) cleared.

    ``static32``: all towns' rasters [towns * gh * gw], four uint8 layers packed per uint32 (little
    endian: road in the low byte); ``town_off`` [n] each env's first cell; the raster cell of pixel
    (r, c) of env i is (rx[i, r] + cx[i, c], ry[i, r] + cy[i, c]) in float32 grid units, truncated and
    clipped to the raster. Envs are visited in ``order`` (grouped by town: one town's raster at a time
    stays in the cache, which halves the time with four towns)."""
    n, h = rx.shape
    w = cx.shape[1]
    for i in order:
        base = town_off[i]
        for r in range(h):
            x0, y0 = rx[i, r], ry[i, r]
            for col in range(w):
                ix = np.int32(x0 + cx[i, col])
                iy = np.int32(y0 + cy[i, col])
                ix = min(max(ix, 0), gw - 1)
                iy = min(max(iy, 0), gh - 1)
                v = static32[base + iy * gw + ix]
                out[i, 0, r, col] = v & 0xFF
                out[i, 2, r, col] = (v >> 8) & 0xFF
                out[i, 6, r, col] = (v >> 16) & 0xFF
                out[i, 7, r, col] = (v >> 24) & 0xFF
                out[i, 1, r, col] = 0
                out[i, 3, r, col] = 0
                out[i, 4, r, col] = 0
                out[i, 5, r, col] = 0


@njit(nogil=True, cache=True, inline="always")
def _put(out, i, channel, x, y, val, ex, ey, ci, si, ego_row, ego_col, ppm):  # pragma: no cover (compiled)
    """Write ``val`` at the pixel of world point (x, y) in env i's image (skipped when outside)."""
    dx = np.float32(x - ex)
    dy = np.float32(y - ey)
    f = dx * ci + dy * si
    lft = dy * ci - dx * si
    row = np.int64(np.floor(ego_row - f * ppm))
    col = np.int64(np.floor(ego_col - lft * ppm))
    if row >= 0 and row < out.shape[2] and col >= 0 and col < out.shape[3]:
        out[i, channel, row, col] = val


@njit(nogil=True, cache=True)
def scatter_points(out, channel, px, py, vals, ex, ey, c, s, ego_row, ego_col, ppm):  # pragma: no cover
    """Write ``vals[i, j]`` into ``out[i, channel]`` at the pixel of world point (px[i, j], py[i, j])
    (float64) seen from ego i at (ex[i], ey[i]) with heading cosine/sine c[i], s[i] (float32); points
    outside the image are skipped, a later point overwrites an earlier one on the same pixel.
    ``ego_row``, ``ego_col``: the ego's position in pixels (float32), ``ppm`` pixels per metre."""
    n, p = px.shape
    for i in range(n):
        for j in range(p):
            _put(out, i, channel, px[i, j], py[i, j], vals[i, j], ex[i], ey[i], c[i], s[i], ego_row, ego_col, ppm)


@njit(nogil=True, cache=True)
def scatter_route(out, channel, val, route, pos0, pos_step, j0, j1, pts, heading, npts, offsets, ex, ey, c, s,
                  ego_row, ego_col, ppm):  # pragma: no cover (compiled)
    """The route of env i drawn lane-wide: points at polyline positions ``pos0[i] + j * pos_step[i]``
    (j in [j0, j1), in points of route ``route[i]`` of ``pts`` [R, N, 2] / ``heading`` [R, N], clipped
    to its ``npts[i]`` points), each shifted sideways by every one of ``offsets`` metres."""
    for i in range(len(route)):
        r = route[i]
        last = npts[i] - 1
        for j in range(j0, j1):
            fpos = min(max(pos0[i] + j * pos_step[i], 0.0), np.float64(last))
            i0 = min(np.int64(fpos), last - 1)
            fr = fpos - i0
            x = pts[r, i0, 0] * (1 - fr) + pts[r, i0 + 1, 0] * fr
            y = pts[r, i0, 1] * (1 - fr) + pts[r, i0 + 1, 1] * fr
            nx, ny = -np.sin(heading[r, i0]), np.cos(heading[r, i0])
            for o in offsets:
                _put(out, i, channel, x + nx * o, y + ny * o, val, ex[i], ey[i], c[i], s[i], ego_row, ego_col, ppm)


@njit(nogil=True, cache=True)
def scatter_boxes(out, channel, vx, vy, vyaw, vlen, vwid, vspeed, box_u, box_v, ex, ey, c, s, ego_row, ego_col,
                  ppm):  # pragma: no cover (compiled)
    """Every road user's box [n, K] sampled at unit-box points (box_u, box_v) scaled by its length and
    width, valued 100 + 155 * min(speed / 15 m/s, 1)."""
    n, k = vx.shape
    for i in range(n):
        for m in range(k):
            cu, su = np.cos(vyaw[i, m]), np.sin(vyaw[i, m])
            val = np.uint8(100 + 155 * min(vspeed[i, m] / 15.0, 1.0))
            for q in range(len(box_u)):
                lu = box_u[q] * vlen[i, m]
                lv = box_v[q] * vwid[i, m]
                _put(out, i, channel, vx[i, m] + cu * lu - su * lv, vy[i, m] + su * lu + cu * lv, val, ex[i], ey[i],
                     c[i], s[i], ego_row, ego_col, ppm)
