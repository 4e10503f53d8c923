"""Small worlds shared by the driving tests (built once per test process)."""

import numpy as np
import pytest

from steer.driving.simulator import DrivingSim, SimConfig, build_world
from steer.driving.town import TownConfig

SMALL = SimConfig(seed=7, n_towns=1, routes_per_town=8,
                  town=TownConfig(nx=3, ny=3, drop_road_prob=0.0, light_prob=0.4, stop_prob=0.3))


@pytest.fixture(scope="session")
def small_world():
    return build_world(SMALL)


def make_sim(world, num_envs=1, route: int = 0, **overrides) -> DrivingSim:
    """A sim over the small world with config overrides, reset on ``route`` with a fixed seed."""
    cfg = SimConfig(**{**SMALL.__dict__, **overrides})
    sim = DrivingSim(num_envs, cfg, world=world)
    sim.reset_envs(np.arange(num_envs), np.random.default_rng(0), routes=np.full(num_envs, route, np.int64))
    return sim


def find_entry(pool, control: int) -> tuple[int, int]:
    """(route, index of its stop line) of the first junction entry with ``control`` in the pool."""
    hits = np.argwhere((pool.stop_control == control) & np.isfinite(pool.stop_s))
    assert len(hits), "no route enters such a junction"
    return int(hits[0, 0]), int(hits[0, 1])


def first_lit_stop(pool, route: int = 0) -> tuple[float, int]:
    """(route arc length, light) of the first signalled junction entry of a route."""
    k = np.flatnonzero(pool.stop_light[route] >= 0)
    assert len(k), "the route crosses no signalled junction"
    return float(pool.stop_s[route, k[0]]), int(pool.stop_light[route, k[0]])
