"""DSRL: reinforcement learning over a frozen diffusion policy's latent noise.

* :mod:`.core` what both algorithms share: config, seeds, progress, the gated chunk step;
* :mod:`.sac` DSRL-SAC (stable-baselines3 SAC in the latent MDP);
* :mod:`.na` DSRL-NA (noise-aliased: Q over executed actions, distilled into Q over latents);
* :mod:`.latent_env` the latent MDP (action = initial noise w); :mod:`.latent_actor` the actor;
* :mod:`.train` the driver, :func:`train_dsrl`.

The BC baseline's noise (warm-up, the gate's baseline, the safe-set fallback) is
:func:`steer.agent.bc.base_latents`, re-exported here with :func:`base_policy_fn`.
"""

from steer.agent.bc import base_latents, base_policy_fn
from steer.agent.dsrl.core import (CURVE_SEED_BASE, TRAIN_SEED_BASE, DSRLConfig, DSRLConfigError, LatentPolicyFn,
                                   episode_value, make_task_env)
from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig, load_dsrl_policy, save_dsrl_policy
from steer.agent.dsrl.latent_env import LatentNoiseEnv, SafeSet
from steer.agent.dsrl.train import train_dsrl

__all__ = ["CURVE_SEED_BASE", "TRAIN_SEED_BASE", "DSRLConfig", "DSRLConfigError", "LatentActor", "LatentActorConfig",
           "LatentNoiseEnv", "LatentPolicyFn", "SafeSet", "base_latents", "base_policy_fn", "episode_value",
           "load_dsrl_policy", "make_task_env", "save_dsrl_policy", "train_dsrl"]
