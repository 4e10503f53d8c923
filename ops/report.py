"""Plots a person would rather look at than read: the DSRL learning curve against BC."""

from __future__ import annotations

from pathlib import Path

from steer.ops.run import read_metrics


def dsrl_report(dsrl_run: Path, bc_success: float, out_png: Path, title: str = "DSRL on PlanarPush",
                final_success: float | None = None, final_episodes: int = 0) -> Path:
    """Success vs env steps (training episodes and evaluations) with the BC level marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(Path(dsrl_run) / "metrics.jsonl")
    train = [(r["step"], r["charts/success_rate"]) for r in records if "charts/success_rate" in r]
    evals = [(r["step"], r["eval/success_rate"]) for r in records if "eval/success_rate" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if train:
        ax.plot(*zip(*train), color="#9db4d8", lw=1, label="training episodes (last 20, exploring)")
    if evals:
        ax.plot(*zip(*evals), "o-", color="#1f4e9c", lw=2, ms=4, label="evaluation (deterministic latent actor)")
    ax.axhline(bc_success, color="#c0392b", ls="--", lw=1.5, label=f"BC, w ~ N(0, I): {bc_success:.2f}")
    if final_success is not None:
        last = evals[-1][0] if evals else (train[-1][0] if train else 0)
        ax.plot([last], [final_success], "*", color="#1f7a1f", ms=14,
                label=f"final, {final_episodes} held-out episodes: {final_success:.2f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
