"""Small worlds shared by the driving tests (built once per test process)."""

import numpy as np
import pytest

from steer.driving.simulator import DrivingSim, SimConfig, build_world
from steer.driving.town import TownConfig

SMALL = SimConfig(seed=7, n_towns=1, routes_per_town=8, town=TownConfig(nx=3, ny=3, drop_road_prob=0.0))


@pytest.fixture(scope="session")
def small_world():
    return build_world(SMALL)


def make_sim(world, num_envs=1, **overrides) -> DrivingSim:
    """A sim over the small world with config overrides, reset on route 0 with a fixed seed."""
    cfg = SimConfig(**{**SMALL.__dict__, **overrides})
    sim = DrivingSim(num_envs, cfg, world=world)
    sim.reset_envs(np.arange(num_envs), np.random.default_rng(0), routes=np.zeros(num_envs, np.int64))
    return sim


def first_lit_stop(pool, route: int = 0) -> tuple[float, int]:
    """(route arc length, light) of the first signalled junction entry of a route."""
    k = np.flatnonzero(pool.stop_light[route] >= 0)
    assert len(k), "the route crosses no signalled junction"
    return float(pool.stop_s[route, k[0]]), int(pool.stop_light[route, k[0]])
