"""Rewrite the README's results table from bench/results/*.json.

Usage: python bench/readme_table.py   (the table sits between the results markers)
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"

# What each benchmark compares, and which figures the README shows (all figures stay in the JSON).
SHOWN = {
    "dsrl": ("DSRL on PlanarPush: env steps to 0.9 success and final success (median over seeds)", None),
    "driving_sim": ("Driving simulator env-steps/s, ours vs highway-env and libsumo",
                    ["sps.ours.1024.no_bev", "sps.ours.1024.vector", "sps.ours.1024.bev", "cpu_sps.ours.1024.no_bev",
                     "cpu_sps.ours.1024.vector",
                     "cpu_sps.ours.1024.bev", "sps.ours.64.bev", "sps.highway_env.racetrack", "sps.libsumo",
                     "raster_share"]),
    "export": ("Policy latency at batch 1: onnxruntime vs torch eager", None),
    "robot_loop": ("Robot loop over DDS across processes, 100 Hz", None),
    "robot_fuzz": ("A policy node process under 10^5 random and malformed messages on every topic, over DDS", None),
    "ppo_throughput": ("PPO end-to-end SPS, ours vs stable-baselines3 PPO (vector: 2 processes vs SB3 on 2 threads)",
                       ["sps.vector.ours", "sps.vector.sb3", "speedup.vector", "cpu_sps.vector.ours",
                        "cpu_sps.vector.sb3", "sps.ours.1024", "sps.sb3.1024", "speedup.1024"]),
    "drive_learning": ("steer drive train defaults: 100 held-out routes in unseen towns (median of seeds)",
                       ["rc.vector", "ds.vector", "rc_fresh.vector", "ds_fresh.vector", "rc_compact.vector", "rc_wide.vector", "minutes_to_0.9.vector", "steps_to_0.9.vector", "sps.vector",
                        "sps_per_cpu.vector", "red_light_per_km.vector", "collision_per_km.vector", "rc.bev",
                        "ds.bev", "rc.expert", "ds.expert", "rc_fresh.expert"]),
    "drive_maps": ("Scripted expert and a trained policy (generated towns only) on untuned maps: stock netgenerate "
                   "grid, spider, random; OpenDRIVE town (100 routes each, traffic)",
                   ["rc.grid", "ds.grid", "rc.spider", "ds.spider", "rc.random", "ds.random", "rc.opendrive",
                    "ds.opendrive", "policy.rc.grid", "policy.ds.grid", "policy.per_km.grid.red_light",
                    "policy.rc.spider", "policy.ds.spider", "policy.rc.random", "policy.ds.random",
                    "policy.rc.opendrive", "policy.ds.opendrive", "policy.per_km.opendrive.red_light"]),
    "carl_reward_scaling": ("CaRL vs Roach reward at small and large minibatch", None),
    "conservative": ("DSRL with and without the conservative gate", None),
    "conservative_lift": ("The gate on robosuite Lift, DSRL-SAC at the PlanarPush settings, 1 seed", None),
    "conservative_lift_harmful": ("The gate on robosuite Lift against a deliberately harmful explorer (constant latent +b)",
                                  None),
    "conservative_lift_harmful_window": ("The same, the gate's window clause on (windows of 20), median of 2 seeds",
                                         None),
    "conservative_lift_window": ("The gate on robosuite Lift with its window clause, DSRL-SAC at the PlanarPush settings",
                                 None),
    "manipulation": ("robosuite Lift and Can: demos, BC with w ~ N(0, I), DSRL-NA and DSRL-SAC (median of the DSRL "
                     "seeds in the details)", None),
    "value_propagation": ("DSRL-NA's action critic on Can's demonstrations: Q(successful) - Q(failed) at steps 0, "
                          "40 and 100 after 4,000 updates, by target step tau", None),
    "adapt": ("DSRL over the wire: `steer adapt` steering a `--steered` node on the simulated robot, 3 processes over DDS",
              None),
}
SCRIPT = {"conservative_lift": "conservative", "conservative_lift_harmful": "conservative",
          "conservative_lift_harmful_window": "conservative", "conservative_lift_window": "conservative"}
"""Results files written by a benchmark of another name (``bench/<script>.py --task …``)."""


def fmt(v: float) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table() -> str:
    rows = ["| benchmark | figure | value |", "|---|---|---|"]
    for name, (title, keys) in SHOWN.items():
        path = ROOT / "bench" / "results" / f"{name}.json"
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        figures = doc["figures"]
        machine = doc.get("machine", {})
        label = f"[{name}](bench/{SCRIPT.get(name, name)}.py): {title} ({machine.get('cores', '?')} cores, {doc.get('date', '')[:10]})"
        for i, (k, v) in enumerate(figures.items() if keys is None else ((k, figures.get(k)) for k in keys if k in figures)):
            rows.append(f"| {label if i == 0 else ''} | `{k}` | {fmt(v)} |")
    return "\n".join(rows)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print(table())


if __name__ == "__main__":
    main()
