"""The driving score in the CARLA leaderboard's way, and summaries of driven routes.

Driving score of a route = route completion × the product of the coefficients of its infractions
(pedestrian collision 0.50, vehicle 0.60, static 0.65, red light 0.70, stop sign 0.80). Off-road,
route deviation, blocked and timeout end the route early: they cost route completion, not a
coefficient, as on the leaderboard. Our episodes end at the first infraction, so a route carries at
most one coefficient.
"""

from __future__ import annotations

import numpy as np

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


def per_km(counts: dict[str, float], km: float) -> dict[str, float | None]:
    """``infractions/<type>_per_km`` for each count and ``infractions/total_per_km``: counts / km. With
    no distance driven a rate has no meaning unless nothing happened: 0 for no infractions, else None
    (a car that crashed where it started; JSON writes null, tables a dash)."""
    total = float(sum(counts.values()))
    rate = (lambda c: c / km) if km > 0 else (lambda c: 0.0 if c == 0 else None)  # noqa: E731
    return {**{f"infractions/{k}_per_km": rate(float(c)) for k, c in counts.items()},
            "infractions/total_per_km": rate(total)}


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-episode means and per-km rates from episode sums: ``episodes``, ``return``, ``length``,
    ``route_completion``, ``driving_score``, ``distance_m`` and one count per infraction type."""
    n = float(sums["episodes"])
    out = {"episodes": n}
    if n == 0:
        return out
    km = float(sums["distance_m"]) / 1000.0
    out.update({"episodic_return": sums["return"] / n, "episodic_length": sums["length"] / n,
                "route_completion": sums["route_completion"] / n, "driving_score": sums["driving_score"] / n,
                "km_driven": km})
    for k in INFRACTIONS:
        out[f"infractions/{k}"] = sums[k] / n
    out.update(per_km({k: sums[k] for k in INFRACTIONS}, km))
    return out


def route_summary(per_route: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over routes, infractions per km and infraction counts (``infractions/<type>_count``) of
    :func:`~steer.driving.evaluation.evaluate_routes`' output."""
    sums = {"episodes": len(per_route["route_completion"]), "return": per_route["return"].sum(),
            "length": per_route["length"].sum(), "route_completion": per_route["route_completion"].sum(),
            "driving_score": per_route["driving_score"].sum(), "distance_m": per_route["distance_m"].sum(),
            **{k: per_route[k].sum() for k in INFRACTIONS}}
    out = summarize(sums)
    out.update({f"infractions/{k}_count": float(per_route[k].sum()) for k in INFRACTIONS})
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A text table: one column per policy (``rows`` maps a name to :func:`route_summary`)."""
    names = list(rows)
    rate = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731  (no km driven, see per_km)
    lines = [("metric", *names)]
    first = rows[names[0]]
    lines.append(("routes", *(f"{rows[n]['episodes']:.0f}" for n in names)))
    lines.append(("route completion %", *(f"{100 * rows[n]['route_completion']:.1f}" for n in names)))
    lines.append(("driving score", *(f"{rows[n]['driving_score']:.3f}" for n in names)))
    lines.append(("km driven", *(f"{rows[n]['km_driven']:.2f}" for n in names)))
    for k in INFRACTIONS:
        if f"infractions/{k}" in first:
            lines.append((f"{k} (count, /km)", *(
                f"{rows[n][f'infractions/{k}'] * rows[n]['episodes']:.0f}, {rate(rows[n][f'infractions/{k}_per_km'])}"
                for n in names)))
    lines.append(("infractions / km", *(rate(rows[n]['infractions/total_per_km']) for n in names)))
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in lines)
