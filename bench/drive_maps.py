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

Knobs (environment): ``MAPS_ROUTES`` (100 per kind, split over the network seeds), ``MAPS_SEEDS`` (2).
"""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTES = int(os.environ.get("MAPS_ROUTES", "100"))
SEEDS = int(os.environ.get("MAPS_SEEDS", "2"))


def opendrive_town(folder: str, seed: int) -> str:
    import subprocess

    from steer.driving.maps import _sumo_binary, sumo_to_opendrive

    net = os.path.join(folder, f"town_{seed}.net.xml")
    subprocess.run([_sumo_binary("netgenerate"), "--grid", "--grid.number", "4", "--grid.length", "110",
                    "--default.lanenumber", "2", "--default-junction-type", "traffic_light", "--seed", str(seed),
                    "-o", net], check=True, capture_output=True)
    return sumo_to_opendrive(net, os.path.join(folder, f"town_{seed}.xodr"))


def drive(path: str, routes: int) -> dict:
    import numpy as np

    from steer.driving.env import DriveEnvConfig
    from steer.driving.evaluation import evaluate_routes
    from steer.driving.expert import ExpertDriver
    from steer.driving.simulator import SimConfig

    cfg = DriveEnvConfig(sim=SimConfig(map_path=path, n_towns=1, routes_per_town=routes, seed=1_000_003), obs="none")

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

    folder = tempfile.mkdtemp(prefix="drive_maps_")
    per_seed = -(-ROUTES // SEEDS)
    figures, details = {}, {}
    for kind in ("grid", "spider", "random", "opendrive"):
        rows = []
        for seed in range(SEEDS):
            path = opendrive_town(folder, seed) if kind == "opendrive" else stock_network(kind, folder, seed, size=4)
            rows.append(drive(path, per_seed))
        res = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        km = res["distance_m"].sum() / 1000.0
        figures[f"rc.{kind}"] = float(res["route_completion"].mean())
        figures[f"ds.{kind}"] = float(res["driving_score"].mean())
        figures[f"km.{kind}"] = float(km)
        for k in INFRACTIONS:
            figures[f"per_km.{kind}.{k}"] = float(res[k].sum() / km)
        details[kind] = {"routes": int(len(res["route_completion"])),
                         "counts": {k: int(res[k].sum()) for k in INFRACTIONS},
                         "worst_routes": sorted(res["route_completion"].tolist())[:5]}
        hit = {k: v for k, v in details[kind]["counts"].items() if v}
        print(f"{kind:9s}: {len(res['route_completion'])} routes, {km:.1f} km, route completion "
              f"{figures[f'rc.{kind}']:.3f}, driving score {figures[f'ds.{kind}']:.3f}, infractions {hit or 'none'}",
              flush=True)
    write_results(os.path.join(HERE, "results", "drive_maps.json"), figures,
                  {"per_kind": details, "routes_per_kind": ROUTES, "network_seeds": SEEDS,
                   "world_seed": 1_000_003, "traffic": "7 vehicles per route (SimConfig default)"})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
