"""The scripted driver's acceptance test: 100 random routes in generated towns with traffic."""

import numpy as np

from steer.driving.expert import ExpertDriver
from steer.driving.simulator import DrivingSim, SimConfig


def test_expert_completes_100_routes_without_infractions():
    cfg = SimConfig(seed=2024)
    sim = DrivingSim(100, cfg)
    rng = np.random.default_rng(0)
    sim.reset_envs(np.arange(100), rng, routes=rng.choice(sim.pool.n_routes, 100, replace=False))
    expert = ExpertDriver(sim)
    done = np.zeros(100, bool)
    completion = np.zeros(100)
    coll = red = 0
    lights_waited = np.zeros(100, bool)
    for _ in range(6000):
        _, _, lgap, _ = sim.route_hazards()
        lights_waited |= (lgap < 5.0) & (sim.v < 0.1) & ~done
        res = sim.step(expert.act())
        end = (res.terminated | res.finished) & ~done
        completion[end] = res.route_completion[end]
        coll += int((res.infractions["collision_vehicle"] & ~done).sum())
        red += int((res.infractions["red_light"] & ~done).sum())
        done |= end
        if done.all():
            break
    assert done.all()
    assert coll == 0 and red == 0
    assert completion.sum() / 100 >= 0.95
    # the routes were not trivial: the driver waited at red lights on many of them
    assert lights_waited.mean() > 0.3
