"""The scripted driver's acceptance test: 100 random routes in generated towns with traffic, pedestrians,
obstacles, and signalled, stop and priority junctions."""

import numpy as np

from steer.driving.expert import ExpertDriver
from steer.driving.simulator import DrivingSim, SimConfig

AT_FAULT = ("collision_vehicle", "collision_static", "collision_pedestrian", "red_light", "stop_sign")


def test_expert_completes_100_routes_without_infractions():
    cfg = SimConfig(seed=2024)
    sim = DrivingSim(100, cfg)
    rng = np.random.default_rng(0)
    sim.reset_envs(np.arange(100), rng, routes=rng.choice(sim.pool.n_routes, 100, replace=False))
    expert = ExpertDriver(sim)
    done = np.zeros(100, bool)
    completion = np.zeros(100)
    counts = dict.fromkeys(AT_FAULT, 0)
    lights_waited = np.zeros(100, bool)
    stopped_at_sign = np.zeros(100, bool)
    yielded_to_people = np.zeros(100, bool)
    passed_obstacle = np.isfinite(sim.pool.obstacle_s[sim.route, :, 0]).any(1)
    reacted = np.zeros(100, bool)  # the driver's focus flag (imitation weights) was up on the route
    focus_steps = live_steps = 0
    for _ in range(6000):
        vgap, _, lgap, lstate = sim.route_hazards()
        standing = (sim.v < 0.1) & ~done
        lights_waited |= (lgap < 5.0) & (lstate >= 0) & standing
        stopped_at_sign |= sim.stop_done & ~done
        ped_ahead = (np.hypot(sim.px - sim.x[:, None], sim.py - sim.y[:, None]) < 12.0) & sim.p_walk
        yielded_to_people |= standing & ped_ahead.any(1) & (vgap < 10.0)
        res = sim.step(expert.act())
        reacted |= expert.reacting & ~done
        focus_steps += int((expert.reacting & ~done).sum())
        live_steps += int((~done).sum())
        end = (res.terminated | res.finished) & ~done
        completion[end] = res.route_completion[end]
        for k in AT_FAULT:
            counts[k] += int((res.infractions[k] & ~done).sum())
        done |= end
        if done.all():
            break
    assert done.all()
    assert counts == dict.fromkeys(AT_FAULT, 0)
    assert completion.sum() / 100 >= 0.95
    # The routes were not trivial: the driver waited at red lights, stood at stop signs, let people
    # cross and passed parked cars or road works on many of them.
    assert lights_waited.mean() > 0.2 and stopped_at_sign.mean() > 0.1
    assert yielded_to_people.sum() >= 3 and passed_obstacle.sum() >= 5
    assert completion[passed_obstacle].mean() >= 0.95
    # The focus flag is up on every route that passed an obstacle and most that let people cross (a
    # driver standing at a red light with people ahead needed no braking for them), and only on a
    # small share of the steps (it marks the rare states, not the cruising or the waits at lights).
    print(f"focus up on {reacted[yielded_to_people].mean():.2f} of the routes that let people cross")
    assert reacted[passed_obstacle].all() and reacted[yielded_to_people].mean() >= 0.8
    print(f"focus share {focus_steps / live_steps:.3f}")
    assert 0.02 < focus_steps / live_steps < 0.25
