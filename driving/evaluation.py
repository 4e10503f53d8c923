"""Evaluation of a driver on held-out routes in towns never trained on (the numbers of ``steer drive eval``)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from steer.driving.env import DriveEnvConfig, DriveVectorEnv
from steer.driving.score import driving_score
from steer.driving.simulator import INFRACTIONS


def heldout_env_config(train: DriveEnvConfig, n_routes: int = 100, seed: int = 1_000_003, n_towns: int = 4,
                       town_size: int | None = None, n_npcs: int | None = None,
                       map_path: str | None = None, junction_margin: float | None = None) -> DriveEnvConfig:
    """The training env's settings over other generated towns and routes (a world seed never used in
    training), every route driven from its start; ``town_size`` (junctions per side) and ``n_npcs``
    (traffic) override the training's, ``junction_margin`` gives every junction that margin beyond its
    widest road instead of the training's (drawn per junction), and ``map_path`` (a ``.net.xml`` or
    ``.xodr`` file; "" for generated towns) replaces the training's map, on which other routes are drawn."""
    per_town = -(-n_routes // n_towns)
    sim = dataclasses.replace(train.sim, seed=seed, n_towns=n_towns, routes_per_town=per_town, start_anywhere=0.0)
    if map_path is not None:
        sim = dataclasses.replace(sim, map_path=map_path)
    if town_size is not None:
        sim = dataclasses.replace(sim, town=dataclasses.replace(sim.town, nx=town_size, ny=town_size))
    if n_npcs is not None:
        sim = dataclasses.replace(sim, n_npcs=n_npcs)
    if junction_margin is not None:
        sim = dataclasses.replace(sim, town=dataclasses.replace(sim.town, junction_margin=junction_margin,
                                                                junction_margin_min=None))
    return dataclasses.replace(train, sim=sim, light_start=0.0)


def evaluate_routes(act: Callable[[dict[str, np.ndarray]], np.ndarray], env_cfg: DriveEnvConfig,
                    n_routes: int = 100, seed: int = 0, batch: int = 100,
                    bind: Callable[[DriveVectorEnv], Callable] | None = None,
                    make_env: Callable[[int], DriveVectorEnv] | None = None) -> dict[str, np.ndarray]:
    """Drive each of the first ``n_routes`` routes of ``env_cfg``'s world once with ``act``.

    ``act`` maps a vector-env observation to actions [N, 2]; a driver that reads the simulator (the
    scripted expert) passes ``bind`` instead, which makes ``act`` from each env. Returns per-route arrays:
    ``route_completion``, ``driving_score``, ``distance_m``, ``return``, ``length`` and one per
    infraction type (0/1); routes are run ``batch`` at a time, all with the reset ``seed``. ``make_env``
    (number of envs -> env) replaces the embedded simulator's env, e.g. with a server backend's.
    """
    out: dict[str, list] = {k: [] for k in ("route", "route_completion", "driving_score", "distance_m", "return",
                                            "length", *INFRACTIONS)}
    for start in range(0, n_routes, batch):
        routes = np.arange(start, min(n_routes, start + batch))
        env = (make_env or (lambda n: DriveVectorEnv(n, env_cfg, autoreset=False)))(len(routes))
        if routes.max() >= env.sim.pool.n_routes:
            raise ValueError(f"the evaluation world has {env.sim.pool.n_routes} routes, fewer than {n_routes}.")
        if bind is not None:
            act = bind(env)
        obs, _ = env.reset(seed=seed + start, options={"routes": routes})
        ended = np.zeros(len(routes), bool)
        final: dict[str, np.ndarray] = {}
        while not ended.all():
            obs, _, term, trunc, infos = env.step(act(obs))
            newly = (term | trunc) & ~ended
            if newly.any():
                for k in ("route_completion", "distance_driven", "episode_return", "episode_length", *INFRACTIONS):
                    final.setdefault(k, np.zeros(len(routes), np.asarray(infos[k]).dtype))
                    final[k][newly] = infos[k][newly]
                ended |= newly
        infr = {k: final[k].astype(np.float64) for k in INFRACTIONS}
        rc = final["route_completion"].astype(np.float64)
        out["route"].append(routes)
        out["route_completion"].append(rc)
        out["driving_score"].append(driving_score(rc, infr))
        out["distance_m"].append(final["distance_driven"].astype(np.float64))
        out["return"].append(final["episode_return"].astype(np.float64))
        out["length"].append(final["episode_length"].astype(np.float64))
        for k in INFRACTIONS:
            out[k].append(infr[k])
    return {k: np.concatenate(v) for k, v in out.items()}
