"""DSRL-SAC: stable-baselines3 SAC acting in :class:`~steer.agent.dsrl.latent_env.LatentNoiseEnv`.

Layer-normed actor and critics, automatic entropy tuning towards a target entropy (0 by
default, as in the official code), and a warm-up of BC-baseline rollouts (its noise, not
SB3's uniform warm-up). Checkpoints hold networks, optimizers, entropy coefficient and the
replay buffer as safetensors + JSON.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from steer.agent.bc import base_latents
from steer.agent.checkpoint import load_checkpoint, save_checkpoint
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.dsrl.core import ChunkGate, DSRLConfig, EnvWrapper, Progress, make_chunk_gate, make_task_env
from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig
from steer.agent.dsrl.latent_env import LatentNoiseEnv, SafeSet
from steer.agent.runlog import RunLog


def _sb3_sac_classes():
    """SB3 subclasses, built lazily so importing this module stays cheap."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.policies import ContinuousCritic
    from stable_baselines3.common.torch_layers import create_mlp
    from stable_baselines3.sac.policies import Actor, SACPolicy

    class LayerNormCritic(ContinuousCritic):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            in_dim = self.q_networks[0][0].in_features
            arch = [m.out_features for m in self.q_networks[0] if isinstance(m, nn.Linear)][:-1]
            for idx in range(self.n_critics):
                q = nn.Sequential(*create_mlp(in_dim, 1, arch, nn.ReLU, post_linear_modules=[nn.LayerNorm]))
                self.add_module(f"qf{idx}", q)
                self.q_networks[idx] = q

    class LayerNormActor(Actor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            arch = self.net_arch
            self.latent_pi = nn.Sequential(*create_mlp(self.features_dim, -1, arch, nn.ReLU,
                                                       post_linear_modules=[nn.LayerNorm]))

    class LayerNormSACPolicy(SACPolicy):
        def make_actor(self, features_extractor=None):
            kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
            return LayerNormActor(**kwargs).to(self.device)

        def make_critic(self, features_extractor=None):
            kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
            return LayerNormCritic(**kwargs).to(self.device)

    class DSRLSAC(SAC):
        """SB3 SAC whose warm-up, and whose chunks the conservative gate gives the baseline, run the BC
        baseline's noise. Set ``base_policy`` (the frozen BC policy), ``base_noise_rng`` and ``chunk_gate``."""

        def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
            if self.num_timesteps < learning_starts:
                return self._as_actions(base_latents(self.base_policy, self.base_noise_rng, n_envs))
            actions, buffer_actions = super()._sample_action(learning_starts, action_noise, n_envs)
            gate: ChunkGate | None = self.chunk_gate
            if gate is None:
                return actions, buffer_actions
            # SAC squashes: actions are the unscaled latents, buffer actions the same scaled to [-1, 1].
            w = gate.latents(actions, lambda: self.predict(self._last_obs, deterministic=True)[0],
                             self.base_noise_rng)
            replaced = np.any(w != actions, axis=1, keepdims=True)  # the sampled rows stay exactly as SB3 made them
            gated_actions, gated_buffer = self._as_actions(w)
            return np.where(replaced, gated_actions, actions), np.where(replaced, gated_buffer, buffer_actions)

        def _as_actions(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # (env actions, buffer actions in [-1, 1]) as SB3 makes them: unscaled from the scaled ones.
            scaled = self.policy.scale_action(w)
            return self.policy.unscale_action(scaled), scaled

        def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos):
            # A safe-set fallback ran the baseline's latent instead: store the latent that ran.
            if any("executed_w" in info and info.get("latent_fallback") for info in infos):
                buffer_action = np.array(buffer_action)
                for i, info in enumerate(infos):
                    if info.get("latent_fallback"):
                        buffer_action[i] = self.policy.scale_action(np.asarray(info["executed_w"])[None])[0]
            super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    return DSRLSAC, LayerNormSACPolicy


def _forwarding_logger(run: RunLog, env_steps: Callable[[], int]):
    from stable_baselines3.common.logger import KVWriter, Logger

    names = {"train/critic_loss": "losses/q", "train/actor_loss": "losses/actor", "train/ent_coef": "losses/alpha",
             "train/ent_coef_loss": "losses/alpha_loss"}

    class Forward(KVWriter):
        def write(self, key_values, key_excluded, step=0):
            m = {names[k]: float(v) for k, v in key_values.items() if k in names}
            if m:
                run.log(env_steps(), m)

    return Logger(folder=None, output_formats=[Forward()])


def make_latent_vec_env(env_id: str, policy: DiffusionPolicy, cfg: DSRLConfig, seed_offset: int = 0,
                        env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None):
    """SB3's vector of ``cfg.num_envs`` latent envs, seeded for training after ``seed_offset`` episodes."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make(i: int):
        return lambda: LatentNoiseEnv(make_task_env(env_id, env_wrapper), policy, cfg.latent_noise_bound,
                                      cfg.reward_offset, safe_set, fallback_seed=cfg.fallback_seed(i))

    venv = DummyVecEnv([make(i) for i in range(cfg.num_envs)])
    venv.seed(cfg.train_seed(seed_offset))
    return venv


def _sac_state(model) -> dict[str, Any]:
    rb = model.replay_buffer
    return {"policy": model.policy.state_dict(), "actor_opt": model.actor.optimizer.state_dict(),
            "critic_opt": model.critic.optimizer.state_dict(), "log_ent_coef": model.log_ent_coef.detach(),
            "ent_opt": model.ent_coef_optimizer.state_dict(),
            "buffer": {k: getattr(rb, k) for k in ("observations", "next_observations", "actions", "rewards",
                                                     "dones", "timeouts")},
            "torch_rng": torch.get_rng_state()}


def sac_meta(model) -> dict[str, Any]:
    """The JSON part of a DSRL-SAC checkpoint beside :func:`_sac_state` (counters, buffer position, noise RNG)."""
    rb = model.replay_buffer
    return {"latent_steps": model.num_timesteps, "n_updates": model._n_updates, "buffer_pos": rb.pos,
            "buffer_full": rb.full, "base_noise_rng": model.base_noise_rng.bit_generator.state}


def restore_sac(model, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Load a checkpoint (:func:`_sac_state` + :func:`sac_meta`) into a model built by :func:`build_sac`."""
    model.policy.load_state_dict(state["policy"])
    model.actor.optimizer.load_state_dict(state["actor_opt"])
    model.critic.optimizer.load_state_dict(state["critic_opt"])
    with torch.no_grad():
        model.log_ent_coef.copy_(state["log_ent_coef"])
    model.ent_coef_optimizer.load_state_dict(state["ent_opt"])
    rb = model.replay_buffer
    for k, v in state["buffer"].items():
        getattr(rb, k)[...] = v
    rb.pos, rb.full = int(meta["buffer_pos"]), bool(meta["buffer_full"])
    model.num_timesteps = int(meta["latent_steps"])
    model._n_updates = int(meta["n_updates"])
    model.base_noise_rng.bit_generator.state = meta.get("base_noise_rng", meta.get("warmup_rng"))
    torch.set_rng_state(state["torch_rng"])


def latent_actor_from_sb3(model, cfg: DSRLConfig, policy: DiffusionPolicy) -> LatentActor:
    """The SB3 SAC actor's deterministic action as a plain :class:`LatentActor` (same layout, same weights)."""
    actor = LatentActor(LatentActorConfig(policy.cfg.obs_dim, policy.cfg.noise_dim, cfg.hidden_dim, cfg.num_layers,
                                          cfg.layer_norm, cfg.latent_noise_bound))
    sb3 = model.actor.state_dict()
    actor.load_state_dict({k: v for k, v in sb3.items() if k.startswith(("latent_pi.", "mu."))})
    return actor.eval()


def build_sac(policy: DiffusionPolicy, venv, cfg: DSRLConfig):
    """The SB3 SAC model of DSRL-SAC over ``venv`` (see :func:`make_latent_vec_env`), not yet trained."""
    DSRLSAC, LayerNormSACPolicy = _sb3_sac_classes()
    # SB3 counts latent steps; chunks are ~chunk_len env steps each.
    model = DSRLSAC(LayerNormSACPolicy, venv, learning_rate=cfg.lr, buffer_size=cfg.buffer_size,
                    learning_starts=cfg.warmup_latent_steps(policy.cfg.chunk_len), batch_size=cfg.batch_size,
                    tau=cfg.tau, gamma=cfg.gamma, train_freq=1, gradient_steps=cfg.utd * cfg.num_envs,
                    ent_coef=f"auto_{cfg.init_alpha!r}", target_entropy=cfg.target_entropy, seed=cfg.seed,
                    device="cpu",
                    policy_kwargs={"net_arch": [cfg.hidden_dim] * cfg.num_layers})
    model.base_policy = policy
    model.base_noise_rng = np.random.default_rng(cfg.seed)
    model.chunk_gate = None
    return model


def train_sac(policy: DiffusionPolicy, env_id: str, cfg: DSRLConfig, run: RunLog, resume: bool,
              progress: bool, env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None
              ) -> tuple[LatentActor, dict]:
    """Train DSRL-SAC; returns the deterministic latent actor and details (``model``, ``progress``, ``gate``)."""
    ckpt_dir = Path(run.checkpoint_dir)
    saved = load_checkpoint(ckpt_dir, "dsrl_trainer") if resume and (ckpt_dir / "dsrl_trainer.safetensors").exists() else None
    meta = saved[1] if saved else {}
    if saved:
        run.rewind(int(meta["env_steps"]))
    prog = Progress(cfg, run, policy, env_id, progress, meta, saved[0] if saved else None)
    venv = make_latent_vec_env(env_id, policy, cfg, prog.episodes, env_wrapper, safe_set)
    warmup_latent = cfg.warmup_latent_steps(policy.cfg.chunk_len)
    model = build_sac(policy, venv, cfg)
    model.set_logger(_forwarding_logger(run, lambda: prog.env_steps))
    if saved:
        restore_sac(model, saved[0], meta)
    gate = make_chunk_gate(cfg, policy, meta)
    model.chunk_gate = gate

    from stable_baselines3.common.callbacks import BaseCallback

    ep_ret = np.zeros(cfg.num_envs)

    class AfterChunk(BaseCallback):
        """Per vector step: progress, the gate's accounting, evaluation and checkpoints; stops at the budget."""

        def _on_step(self) -> bool:
            infos, dones, rewards = self.locals["infos"], self.locals["dones"], self.locals["rewards"]
            ep_ret[:] += rewards
            rets = [float(ep_ret[i]) if dones[i] else None for i in range(len(dones))]
            ep_ret[dones] = 0.0
            warm = self.model.num_timesteps < warmup_latent
            prog.on_transition(infos, dones, rets)
            if gate is not None:
                gate.record(rewards, dones, infos, prog.env_steps, warm, run)
            if not warm:
                prog.maybe_eval(lambda: latent_actor_from_sb3(self.model, cfg, policy))
            if prog.due_checkpoint():
                save_checkpoint(ckpt_dir, "dsrl_trainer", {**_sac_state(self.model), **prog.tensors()},
                                {**prog.state(), **sac_meta(self.model), "config": asdict(cfg),
                                 **({"conservative": gate.state()} if gate is not None else {})})
            return not prog.done()

    if not prog.done():
        model.learn(total_timesteps=10**9, callback=AfterChunk(), reset_num_timesteps=not saved, log_interval=4)
    prog.bar.close()
    venv.close()
    return latent_actor_from_sb3(model, cfg, policy), {"model": model, "progress": prog, "gate": gate.gated if gate is not None else None}
