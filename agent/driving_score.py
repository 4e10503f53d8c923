"""Driving metrics in the CARLA leaderboard's way, and the evaluation of a policy on held-out routes.

Driving score of a route = route completion × the product of the coefficients of its infractions
(pedestrian collision 0.50, vehicle 0.60, static 0.65, red light 0.70, stop sign 0.80). Off-road,
route deviation, blocked and timeout end the route early: they cost route completion, not a
coefficient, as on the leaderboard. Our episodes end at the first infraction, so a route carries at
most one coefficient.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from steer.driving.env import DriveEnvConfig, DriveVectorEnv
from steer.driving.simulator import INFRACTIONS

INFRACTION_COEFFICIENTS = {
    "collision_pedestrian": 0.50,
    "collision_vehicle": 0.60,
    "collision_static": 0.65,
    "red_light": 0.70,
    "stop_sign": 0.80,
}
"""Penalty coefficient per infraction type (CARLA leaderboard)."""


def driving_score(route_completion: np.ndarray, infractions: dict[str, np.ndarray]) -> np.ndarray:
    """Per route: completion (0..1) × Π coefficient^count over the penalized infraction types.

    ``infractions`` maps a type to counts (or booleans) per route; unknown types cost nothing.
    """
    score = np.asarray(route_completion, np.float64).copy()
    for name, coef in INFRACTION_COEFFICIENTS.items():
        if name in infractions:
            score *= coef ** np.asarray(infractions[name], np.float64)
    return score


class EpisodeStats:
    """Sums over finished episodes, from the driving env's infos (reducible over ranks)."""

    KEYS = ("episodes", "return", "length", "route_completion", "driving_score", "distance_m",
            *INFRACTIONS)

    def __init__(self):
        self.sums = np.zeros(len(self.KEYS))

    def add(self, infos: dict[str, np.ndarray], done: np.ndarray) -> None:
        """Count the episodes that ``done`` marks (infos describe their last step)."""
        if not done.any():
            return
        rc = infos["route_completion"][done]
        infr = {k: infos[k][done] for k in INFRACTIONS}
        vals = [done.sum(), infos["episode_return"][done].sum(), infos["episode_length"][done].sum(), rc.sum(),
                driving_score(rc, infr).sum(), infos["distance_driven"][done].sum(),
                *(infr[k].sum() for k in INFRACTIONS)]
        self.sums += np.asarray(vals, np.float64)

    def summary(self, reduce: Callable | None = None) -> dict[str, float]:
        """Means per episode and infractions per km; ``reduce`` sums a tensor over ranks (DDP)."""
        sums = self.sums
        if reduce is not None:
            import torch

            sums = reduce(torch.from_numpy(sums.copy())).numpy()
        return summarize(dict(zip(self.KEYS, sums)))


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-episode means and per-km rates from episode sums (keys of :attr:`EpisodeStats.KEYS`)."""
    n = float(sums["episodes"])
    out = {"episodes": n}
    if n == 0:
        return out
    km = max(float(sums["distance_m"]) / 1000.0, 1e-9)
    out.update({"episodic_return": sums["return"] / n, "episodic_length": sums["length"] / n,
                "route_completion": sums["route_completion"] / n, "driving_score": sums["driving_score"] / n,
                "km_driven": km})
    for k in INFRACTIONS:
        out[f"infractions/{k}"] = sums[k] / n
        out[f"infractions/{k}_per_km"] = sums[k] / km
    out["infractions/total_per_km"] = sum(sums[k] for k in INFRACTIONS) / km
    return out


def heldout_env_config(train: DriveEnvConfig, n_routes: int = 100, seed: int = 1_000_003,
                       n_towns: int = 4) -> DriveEnvConfig:
    """The training env's settings over other generated towns and routes (a world seed never used in training)."""
    per_town = -(-n_routes // n_towns)
    sim = dataclasses.replace(train.sim, seed=seed, n_towns=n_towns, routes_per_town=per_town)
    return dataclasses.replace(train, sim=sim)


def evaluate_routes(act: Callable[[dict[str, np.ndarray]], np.ndarray], env_cfg: DriveEnvConfig,
                    n_routes: int = 100, seed: int = 0, batch: int = 100,
                    bind: Callable[[DriveVectorEnv], Callable] | None = None) -> dict[str, np.ndarray]:
    """Drive each of the first ``n_routes`` routes of ``env_cfg``'s world once with ``act``.

    ``act`` maps a vector-env observation to actions [N, 2]; a driver that reads the simulator (the
    scripted expert) passes ``bind`` instead, which makes ``act`` from each env. Returns per-route arrays:
    ``route_completion``, ``driving_score``, ``distance_m``, ``return``, ``length`` and one per
    infraction type (0/1); routes are run ``batch`` at a time, all with the reset ``seed``.
    """
    out: dict[str, list] = {k: [] for k in ("route", "route_completion", "driving_score", "distance_m", "return",
                                            "length", *INFRACTIONS)}
    for start in range(0, n_routes, batch):
        routes = np.arange(start, min(n_routes, start + batch))
        env = DriveVectorEnv(len(routes), env_cfg, autoreset=False)
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


def route_summary(per_route: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over routes and infractions per km of :func:`evaluate_routes`' output."""
    sums = {"episodes": len(per_route["route_completion"]), "return": per_route["return"].sum(),
            "length": per_route["length"].sum(), "route_completion": per_route["route_completion"].sum(),
            "driving_score": per_route["driving_score"].sum(), "distance_m": per_route["distance_m"].sum(),
            **{k: per_route[k].sum() for k in INFRACTIONS}}
    return summarize(sums)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A text table: one column per policy (``rows`` maps a name to :func:`route_summary`)."""
    names = list(rows)
    lines = [("metric", *names)]
    first = rows[names[0]]
    lines.append(("routes", *(f"{rows[n]['episodes']:.0f}" for n in names)))
    lines.append(("route completion %", *(f"{100 * rows[n]['route_completion']:.1f}" for n in names)))
    lines.append(("driving score", *(f"{rows[n]['driving_score']:.3f}" for n in names)))
    lines.append(("km driven", *(f"{rows[n]['km_driven']:.2f}" for n in names)))
    for k in INFRACTIONS:
        if f"infractions/{k}" in first:
            lines.append((f"{k} (count, /km)", *(
                f"{rows[n][f'infractions/{k}'] * rows[n]['episodes']:.0f}, {rows[n][f'infractions/{k}_per_km']:.2f}"
                for n in names)))
    lines.append(("infractions / km", *(f"{rows[n]['infractions/total_per_km']:.2f}" for n in names)))
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in lines)
