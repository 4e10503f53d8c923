"""Plots a person would rather look at than read: the DSRL learning curve against BC, and safety."""

from __future__ import annotations

from pathlib import Path

from steer.ops.run import read_metrics



def _save(fig, out_png: str | Path) -> Path:
    """Lay out, write and close a figure; returns the PNG's path (its folder is created)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png

def dsrl_report(dsrl_run: Path, bc_success: float | None, out_png: Path, title: str = "DSRL on PlanarPush",
                final_success: float | None = None, final_episodes: int = 0) -> Path:
    """Success vs env steps (training episodes and evaluations) with the BC level marked (when known);
    a second panel shows the safety metrics when the run logged them (gate, shield, safe set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(Path(dsrl_run) / "metrics.jsonl")
    train = [(r["step"], r["charts/success_rate"]) for r in records if "charts/success_rate" in r]
    evals = [(r["step"], r["eval/success_rate"]) for r in records if "eval/success_rate" in r]
    safety = [r for r in records if "safety/rho" in r]
    fallbacks = [(r["step"], r["safety/fallback_frac"]) for r in records if "safety/fallback_frac" in r]
    if safety or fallbacks:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 6.6), dpi=120, sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1.4]})
    else:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        ax2 = None
    if train:
        ax.plot(*zip(*train), color="#9db4d8", lw=1, label="training episodes (last 20, exploring)")
    if evals:
        ax.plot(*zip(*evals), "o-", color="#1f4e9c", lw=2, ms=4, label="evaluation (deterministic latent actor)")
    if bc_success is not None:
        ax.axhline(bc_success, color="#c0392b", ls="--", lw=1.5, label=f"BC, w ~ N(0, I): {bc_success:.2f}")
    if final_success is not None:
        last = evals[-1][0] if evals else (train[-1][0] if train else 0)
        ax.plot([last], [final_success], "*", color="#1f7a1f", ms=14,
                label=f"final, {final_episodes} held-out episodes: {final_success:.2f}")
    if ax2 is not None:
        _safety_panel(ax2, safety, fallbacks)
        ax2.set_xlabel("env steps")
    if ax2 is None:
        ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_png)


def _safety_panel(ax, safety: list[dict], fallbacks: list[tuple[int, float]]) -> None:
    """Conservative exploration per window: its value against the threshold, ρ, episodes below the
    threshold, and (right axis) shield interventions per 1,000 steps; safe-set fallbacks when logged."""
    if safety:
        steps = [r["step"] for r in safety]
        ax.plot(steps, [r["safety/window_value"] for r in safety], "o-", color="#1f4e9c", ms=3, lw=1.2,
                label="window success (training episodes)")
        ax.step(steps, [r["safety/threshold"] for r in safety], where="post", color="#c0392b", ls="--", lw=1.2,
                label="threshold (1 − α)·L_b")
        ax.plot(steps, [r["safety/rho"] for r in safety], color="#e67e22", lw=1.5, label="ρ (explorer share)")
        ax.plot(steps, [r["safety/below_threshold_frac"] for r in safety], color="#7f8c8d", lw=1, ls=":",
                label="episodes below threshold")
        shield = [(r["step"], r["safety/shield_interventions_per_1k"]) for r in safety
                  if "safety/shield_interventions_per_1k" in r]
        if shield:
            right = ax.twinx()
            right.plot(*zip(*shield), color="#8e44ad", lw=1, alpha=0.7, label="shield interventions / 1k steps")
            right.set_ylabel("interventions / 1k steps", color="#8e44ad", fontsize=8)
            right.set_ylim(bottom=0)
            right.legend(loc="upper right", fontsize=7)
    if fallbacks:
        ax.plot(*zip(*fallbacks), color="#16a085", lw=1, label="safe-set fallbacks (fraction of chunks)")
    ax.set_ylabel("safety")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)


def drive_report(run: Path, out_png: Path, title: str = "PPO driving") -> Path:
    """Route completion and driving score on held-out routes (``eval/*``, with the training episodes'
    for reference) against wall-clock minutes and against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(Path(run) / "metrics.jsonl")
    train = sorted((r["step"], r.get("charts/minutes", float("nan")), r["charts/route_completion"])
                   for r in records if "charts/route_completion" in r)
    evals = sorted((r["step"], r["eval/minutes"], r["eval/route_completion"], r["eval/driving_score"])
                   for r in records if "eval/route_completion" in r)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for ax, col, label in ((axes[0], 1, "wall-clock minutes"), (axes[1], 0, "env steps")):
        if train:
            ax.plot([t[col] for t in train], [t[2] for t in train], color="#9db4d8", lw=1,
                    label="route completion, training episodes (sampled actions)")
        if evals:
            ax.plot([e[col] for e in evals], [e[2] for e in evals], "o-", color="#1f4e9c", lw=2, ms=4,
                    label="route completion, held-out routes (mean actions)")
            ax.plot([e[col] for e in evals], [e[3] for e in evals], "s-", color="#1f7a1f", lw=2, ms=4,
                    label="driving score, held-out routes")
        ax.axhline(0.9, color="#c0392b", ls="--", lw=1)
        ax.set_xlabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the route / score")
    axes[0].set_title(title)
    axes[1].legend(loc="lower right", fontsize=7)
    return _save(fig, out_png)
