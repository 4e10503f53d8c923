"""``steer collect``, ``steer bc``, ``steer dsrl`` and ``steer eval``: parse options, run a stage, print.

The stages themselves are :mod:`steer.ops.stages`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from steer.ops.stages import (BCRunConfig, CollectConfig, DSRLRunConfig, collect_demos, evaluate_run, run_bc,
                              run_dsrl)


def collect(cfg: CollectConfig) -> int:
    """Record scripted-expert demonstrations as a Minari dataset."""
    res = collect_demos(cfg)
    print(f"wrote {res.episodes} demonstrations ({res.steps} steps, {res.success_rate:.0%} successful) to {res.out}")
    return 0


def bc(cfg: BCRunConfig) -> int:
    """Train a BC diffusion policy on a demonstration dataset."""
    res = run_bc(cfg)
    if res.eval is not None:
        print(f"BC success rate {res.eval.success_rate:.2f} over {res.eval.episodes} held-out episodes; "
              f"run in {res.run}")
    return 0


def dsrl(cfg: DSRLRunConfig) -> int:
    """Adapt a BC diffusion policy with RL over its latent noise (DSRL); its weights stay frozen."""
    res = run_dsrl(cfg)
    if res.eval is not None:
        print(f"DSRL success rate {res.eval.success_rate:.2f} over {res.eval.episodes} held-out episodes "
              f"after {res.env_steps} env steps; run in {res.run}")
    return 0


@dataclass(frozen=True)
class EvalCommand:
    """Evaluate a BC or DSRL run on held-out seeds."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory (BC or DSRL)."""
    episodes: int = field(default=100, metadata={"range": "[1, inf)"})
    """Evaluation episodes."""
    seed: int = 1_000_000
    """Seed of the first episode; training never uses seeds this high."""
    noise_seed: int = 0
    """Seed of the BC policy's N(0, I) noise."""


def evaluate(cfg: EvalCommand) -> int:
    """Evaluate a BC or DSRL run on held-out seeds and print success and return."""
    res = evaluate_run(cfg.run, cfg.episodes, cfg.seed, cfg.noise_seed)
    print(json.dumps({"run": str(res.run), "kind": res.kind, **asdict(res.eval)}))
    return 0


__all__ = ["collect", "bc", "dsrl", "evaluate"]
