"""The DSRL driver: pick the algorithm, train it on a frozen policy, save the DSRL policy.

Budgets are counted in task env steps (one latent step executes a whole chunk). ``resume``
continues from the last checkpoint (the episodes in flight when the process died are
dropped, nothing learned is).
"""

from __future__ import annotations

import torch

from steer.agent.diffusion import DiffusionPolicy
from steer.agent.dsrl.core import DSRLConfig, EnvWrapper, LatentPolicyFn
from steer.agent.dsrl.latent_actor import save_dsrl_policy
from steer.agent.dsrl.latent_env import SafeSet
from steer.agent.dsrl.na import train_na
from steer.agent.dsrl.sac import train_sac
from steer.agent.runlog import RunLog


def train_dsrl(policy: DiffusionPolicy, env_id: str, cfg: DSRLConfig, run: RunLog, resume: bool = False,
               progress: bool = True, policy_meta: dict | None = None,
               env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None
               ) -> tuple[LatentPolicyFn, dict]:
    """Run DSRL on a frozen ``policy``; saves ``dsrl_policy`` in the run's checkpoints and returns the
    deterministic latent policy and training details (``actor``; ``selection``: which actor was kept, see
    :attr:`DSRLConfig.keep_best`; ``progress``; ``gate``: the conservative
    gate's :class:`~steer.agent.conservative.GatedEnvs`, with its per-episode records, or None when it is off).

    ``env_wrapper`` wraps every training task env (e.g. a safety shield, so training sees the limits the
    hardware enforces); its cumulative ``safety/interventions`` and ``safety/violations`` infos are logged
    by the gate's metrics. ``safe_set`` (see :class:`~steer.agent.dsrl.latent_env.LatentNoiseEnv`) replaces
    chunks that would leave the safe set by the baseline's; the learner stores the latent that ran and
    ``safety/fallbacks`` is logged."""
    trainers = {"sac": train_sac, "na": train_na}
    if cfg.algorithm not in trainers:
        raise ValueError(f"unknown DSRL algorithm {cfg.algorithm!r}; choose 'sac' or 'na'.")
    cfg.check_policy(policy)
    torch.manual_seed(cfg.seed)
    for p in policy.parameters():
        p.requires_grad_(False)
    final, details = trainers[cfg.algorithm](policy, env_id, cfg, run, resume, progress, env_wrapper, safe_set)
    actor, selection = details["progress"].select_actor(final)
    save_dsrl_policy(run.checkpoint_dir, actor, policy,
                     {**(policy_meta or {}), "algorithm": cfg.algorithm, "env_steps": details["progress"].env_steps,
                      **selection})
    details["actor"], details["selection"] = actor, selection
    return LatentPolicyFn(policy, actor), details
