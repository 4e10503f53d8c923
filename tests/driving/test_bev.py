"""BEV raster: channels land at the pixels the geometry says."""

import numpy as np

from steer.driving.bev import BEV_CHANNELS, BevConfig, BevRenderer
from steer.driving.roadmap import LIGHT_RED
from tests.driving.conftest import first_lit_stop, make_sim
from tests.driving.test_simulator import force_light

CH = {c: i for i, c in enumerate(BEV_CHANNELS)}


def test_bev_road_route_vehicle(small_world):
    sim = make_sim(small_world, n_npcs=1)
    cfg = BevConfig(size=64, pixels_per_meter=1.0, ego_from_bottom=24)
    # vehicle 10 m straight ahead of the ego on its route
    lane, s = sim.pool.point_lane[0, 0], sim.pool.point_lane_s[0, 0]
    sim.n_lane[0, 0], sim.n_s[0, 0], sim.n_v[0, 0] = lane, s + 10.0, 15.0
    sim.nx[0], sim.ny[0], sim.nyaw[0] = [a[None] for a in sim.map.lane_pose(np.array([lane]), np.array([s + 10.0]))]
    bev = BevRenderer(sim, cfg).render()[0]
    row, col = 64 - 24, 32  # the ego's pixel (row of its centre, just right of the middle)
    assert bev[CH["road"], row, col] == 255 and bev[CH["route"], row - 5, col] == 255
    assert bev[CH["vehicles"], row - 10, col] == 255  # 100 + 155 * min(15/15, 1)
    assert bev[CH["vehicles"], row, col] == 0 and bev[CH["vehicles"], row - 20, col] == 0
    # 2 px/m: the vehicle is 20 px ahead
    bev2 = BevRenderer(sim, BevConfig(size=96, pixels_per_meter=2.0, ego_from_bottom=30)).render()[0]
    assert bev2[CH["vehicles"], 96 - 30 - 20, 48] > 0 and bev2[CH["vehicles"], 96 - 30 - 26, 48] == 0
    assert bev[CH["speed_limit"], row, col] == round(sim.pool.speed_limit[0, 0] / 30 * 255)


def test_bev_red_light_at_stop_line(small_world):
    sim = make_sim(small_world, n_npcs=0)
    pool = sim.pool
    s_stop, light = first_lit_stop(pool)
    s0 = s_stop - 15.0
    i = int(s0 / pool.spacing[0])
    sim.x[0], sim.y[0], sim.yaw[0] = pool.pts[0, i, 0], pool.pts[0, i, 1], pool.heading[0, i]
    sim.s[0], sim.seg[0] = i * pool.spacing[0], i
    force_light(sim, light, LIGHT_RED)
    bev = BevRenderer(sim, BevConfig()).render()[0]
    ahead = s_stop - sim.s[0]
    r = int(np.floor(64 - 24 - ahead))
    window = bev[CH["lights"], r - 1 : r + 2, 30:35]
    assert (window == 255).any()
    assert (bev[CH["stop_lines"], r - 1 : r + 2, 30:35] == 255).any()


def test_threads_render_the_same_pictures(small_world):
    sim = make_sim(small_world, 80)
    rng = np.random.default_rng(0)
    for _ in range(20):
        sim.step(rng.uniform(-0.3, 1.0, (80, 2)))
    one = BevRenderer(sim, BevConfig(threads=1)).render()
    two = BevRenderer(sim, BevConfig(threads=2)).render()
    assert one[:, CH["vehicles"]].any() and one[:, CH["route"]].any()
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(BevRenderer(sim, BevConfig(threads=2)).render(np.arange(70, 80)), one[70:])


def test_static_layers_are_the_nearest_raster_cells(small_world):
    """The compiled lookup against the geometry written out in numpy: every pixel's road, lane-marking,
    speed-limit and shoulder value is that of the raster cell under the pixel's centre."""
    sim = make_sim(small_world, 16)
    rng = np.random.default_rng(1)
    for _ in range(15):
        sim.step(rng.uniform(-0.3, 1.0, (16, 2)))
    cfg = BevConfig(size=48, pixels_per_meter=1.5, ego_from_bottom=16)
    bev = BevRenderer(sim, cfg).render()
    m = sim.map
    rows, cols = np.mgrid[0:48, 0:48]
    fwd = (48 - 16 - rows - 0.5) / 1.5
    left = (24 - cols - 0.5) / 1.5
    _, gh, gw = m.sdf.shape
    for i in range(16):
        c, s = np.cos(sim.yaw[i]), np.sin(sim.yaw[i])
        wx = sim.x[i] + c * fwd - s * left
        wy = sim.y[i] + s * fwd + c * left
        ix = np.clip(((wx - m.grid_origin[sim.town[i], 0]) / m.grid_res).astype(int), 0, gw - 1)
        iy = np.clip(((wy - m.grid_origin[sim.town[i], 1]) / m.grid_res).astype(int), 0, gh - 1)
        want = m.static_layers[sim.town[i], iy, ix]  # [H, W, 4]
        for layer, ch in enumerate((CH["road"], CH["lane_markings"], CH["speed_limit"], CH["shoulder"])):
            # float32 in the renderer, float64 here: a pixel centre on a cell edge may round either way
            assert (bev[i, ch] == want[..., layer]).mean() > 0.995, (i, BEV_CHANNELS[ch])
    assert bev[:, CH["road"]].any() and bev[:, CH["shoulder"]].any()
