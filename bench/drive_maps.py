"""Benchmark: the scripted expert on maps nobody tuned for it, per map kind.

Stock SUMO networks as ``netgenerate`` makes them with its defaults (default light programs with
permissive left turns, priority junctions where it guesses no light, turnarounds): a 4 x 4 grid with
lights everywhere, a spider web (5 arms, 4 rings) and a random network, two network seeds each; and
an OpenDRIVE town written by SUMO's ``netconvert --opendrive-output`` from a 4 x 4 netgenerate grid
with two lanes each way, read back through ``--map``'s OpenDRIVE import. On each, the expert drives
``MAPS_ROUTES`` routes from a held-out world seed with the default traffic (7 vehicles around the
route) through ``steer drive eval``'s evaluation.

Figures per kind (``grid``, ``spider``, ``random``, ``opendrive``): ``rc.<kind>`` (mean route
completion), ``ds.<kind>`` (mean driving score), ``km.<kind>`` and ``per_km.<kind>.<infraction>``
for every infraction type. Writes ``bench/results/drive_maps.json``.

With ``MAPS_POLICY`` (a ``steer drive train`` run; its kept policy, as ``steer drive eval`` loads it),
the trained policy drives the same routes with the same traffic: figures ``policy.rc.<kind>``,
``policy.ds.<kind>``, ``policy.per_km.<kind>.<infraction>``. It was trained on generated towns only,
so every one of these maps is unseen.

Knobs (environment): ``MAPS_ROUTES`` (100 per kind, split over the network seeds), ``MAPS_SEEDS`` (2),
``MAPS_POLICY`` (a run directory; unset: the expert only), ``MAPS_OUT`` (results file name,
``drive_maps.json``).
"""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTES = int(os.environ.get("MAPS_ROUTES", "100"))
SEEDS = int(os.environ.get("MAPS_SEEDS", "2"))
POLICY = os.environ.get("MAPS_POLICY", "")
OUT = os.environ.get("MAPS_OUT", "drive_maps.json")


def opendrive_town(folder: str, seed: int) -> str:
    import subprocess

    from steer.driving.maps import _sumo_binary, sumo_to_opendrive

    net = os.path.join(folder, f"town_{seed}.net.xml")
    subprocess.run([_sumo_binary("netgenerate"), "--grid", "--grid.number", "4", "--grid.length", "110",
                    "--default.lanenumber", "2", "--default-junction-type", "traffic_light", "--seed", str(seed),
                    "-o", net], check=True, capture_output=True)
    return sumo_to_opendrive(net, os.path.join(folder, f"town_{seed}.xodr"))


def drive(path: str, routes: int, policy=None) -> dict:
    """Per-route results of the expert on ``routes`` routes of the map ``path`` (``policy``: (model,
    PPOConfig) of a trained run, which then drives the same routes and traffic instead)."""
    import dataclasses

    import numpy as np

    from steer.driving.env import DriveEnvConfig
    from steer.driving.evaluation import evaluate_routes
    from steer.driving.expert import ExpertDriver
    from steer.driving.simulator import SimConfig

    cfg = DriveEnvConfig(sim=SimConfig(map_path=path, n_towns=1, routes_per_town=routes, seed=1_000_003), obs="none")
    if policy is not None:
        from steer.ops.drive_stages import policy_actor

        model, ppo = policy
        cfg = dataclasses.replace(ppo.env, sim=cfg.sim, light_start=0.0)  # the policy's observation, same world
        res = evaluate_routes(policy_actor(model), cfg, routes, seed=0, batch=50)
    else:
        def bind(env):
            driver = ExpertDriver(env.sim)
            return lambda obs: driver.act()

        res = evaluate_routes(None, cfg, routes, seed=0, bind=bind, batch=50)
    return {k: np.asarray(v).tolist() for k, v in res.items()}


def main() -> int:
    import numpy as np

    from benchlib import write_results
    from steer.driving.maps import stock_network
    from steer.driving.simulator import INFRACTIONS

    drivers = [("expert", "", None)]  # (name, figure prefix, (model, PPOConfig) or None for the expert)
    if POLICY:
        from pathlib import Path

        from steer.agent.checkpoint import CheckpointError
        from steer.agent.ppo import load_policy

        try:
            model, ppo, meta = load_policy(Path(POLICY) / "checkpoints")
        except CheckpointError as err:
            print(f"MAPS_POLICY {POLICY!r}: {err}", file=sys.stderr)
            return 2
        drivers.append(("policy", "policy.", (model, ppo)))
    folder = tempfile.mkdtemp(prefix="drive_maps_")
    per_seed = -(-ROUTES // SEEDS)
    figures, details = {}, {name: {} for name, _, _ in drivers}
    for kind in ("grid", "spider", "random", "opendrive"):
        paths = [opendrive_town(folder, seed) if kind == "opendrive" else stock_network(kind, folder, seed, size=4)
                 for seed in range(SEEDS)]
        for name, prefix, who in drivers:
            rows = [drive(path, per_seed, who) for path in paths]
            res = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
            km = res["distance_m"].sum() / 1000.0
            figures[f"{prefix}rc.{kind}"] = float(res["route_completion"].mean())
            figures[f"{prefix}ds.{kind}"] = float(res["driving_score"].mean())
            figures[f"{prefix}km.{kind}"] = float(km)
            counts = {k: int(res[k].sum()) for k in INFRACTIONS}
            for k in INFRACTIONS:
                figures[f"{prefix}per_km.{kind}.{k}"] = counts[k] / km
            details[name][kind] = {"routes": int(len(res["route_completion"])), "counts": counts,
                                   "worst_routes": sorted(res["route_completion"].tolist())[:5]}
            hit = {k: v for k, v in counts.items() if v}
            print(f"{name:6s} {kind:9s}: {len(res['route_completion'])} routes, {km:.1f} km, route completion "
                  f"{figures[f'{prefix}rc.{kind}']:.3f}, driving score {figures[f'{prefix}ds.{kind}']:.3f}, "
                  f"infractions {hit or 'none'}", flush=True)
    extra = {"policy_per_kind": details["policy"], "policy_run": POLICY,
             "policy_env_steps": int(meta.get("kept_step", meta["global_step"])), "policy_seed": ppo.seed} if POLICY else {}
    write_results(os.path.join(HERE, "results", OUT), figures,
                  {"per_kind": details["expert"], "routes_per_kind": ROUTES, "network_seeds": SEEDS,
                   "world_seed": 1_000_003, "traffic": "7 vehicles per route (SimConfig default)", **extra})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
