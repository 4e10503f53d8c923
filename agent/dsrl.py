"""DSRL: reinforcement learning over a frozen diffusion policy's latent noise.

Two algorithms share one driver (:func:`train_dsrl`):

* ``sac``: DSRL-SAC. stable-baselines3 SAC acts in :class:`LatentNoiseEnv`, with
  layer-normed actor and critics, automatic entropy tuning towards a target entropy
  (0 by default, as in the official code), and a warm-up of base-policy rollouts
  with w ~ N(0, I) instead of SB3's uniform warm-up.
* ``na``: DSRL-NA (noise-aliased), :mod:`steer.agent.dsrl_na`.

Budgets are counted in task env steps (one latent step executes a whole chunk).
Checkpoints hold networks, optimizers, entropy coefficient and the replay buffer as
safetensors + JSON; ``resume`` continues from the last one (the episodes in flight
when the process died are dropped, nothing learned is).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from steer.agent.checkpoint import load_checkpoint, save_checkpoint
from steer.agent.conservative import ConservativeConfig, GatedEnvs
from steer.agent.diffusion import DiffusionPolicy
from steer.agent.evaluate import EVAL_SEED_BASE, evaluate_chunked
from steer.agent.latent_actor import LatentActor, LatentActorConfig, save_dsrl_policy
from steer.agent.latent_env import LatentNoiseEnv, SafeSet
from steer.agent.runlog import RunLog

# Training episodes use seeds from here up; evaluation curves use their own range.
TRAIN_SEED_BASE = 10_000
CURVE_SEED_BASE = EVAL_SEED_BASE + 500_000


@dataclass(frozen=True)
class DSRLConfig:
    """DSRL hyperparameters. Defaults are sized for 2 CPU cores; the paper's GPU settings are noted per field."""

    algorithm: Literal["sac", "na"] = "sac"
    """``sac`` (DSRL-SAC) or ``na`` (DSRL-NA, noise-aliased)."""
    latent_noise_bound: float = 1.5
    """b: the latent noise is bounded to [-b, b] (paper: 1.0-2.5, default 1.5)."""
    env_steps: int = 24_000
    """Budget of task env steps (each latent step executes one chunk)."""
    reward_offset: float = 1.0
    """Subtracted from every task reward (official Robomimic setting: 1, i.e. -1 per step until success)."""
    warmup_env_steps: int = 1_000
    """Env steps of base-policy rollouts (w ~ N(0, I)) before learning starts."""
    utd: int = 8
    """Gradient updates per latent step (paper: 20 on a GPU; 4 here learned clearly slower)."""
    batch_size: int = 256
    """Minibatch size."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and entropy coefficient."""
    tau: float = 0.005
    """Polyak factor of the target critics."""
    gamma: float = 0.99
    """Discount per latent step."""
    hidden_dim: int = 128
    """Width of actor and critic MLPs (paper: 256 on Robomimic, 128 on Gym tasks)."""
    num_layers: int = 3
    """Hidden layers of actor and critic MLPs."""
    layer_norm: bool = True
    """Layer norm after every hidden linear layer."""
    target_entropy: float = 0.0
    """Target of automatic entropy tuning (official default 0)."""
    num_envs: int = 4
    """Task envs stepped together."""
    buffer_size: int = 100_000
    """Replay capacity in latent steps."""
    na_utd: int = 4
    """DSRL-NA: gradient updates per latent step (each decodes the diffusion policy, so they cost more than
    SAC's; UTD 4 with 4 distillation steps reached 0.94 in 10k env steps, UTD 1 with 1 never learned)."""
    na_distill_steps: int = 4
    """DSRL-NA: regression steps of Q_W onto Q_A per update (official: 10 on a GPU)."""
    na_prefill_demos: str = ""
    """DSRL-NA: a dataset folder whose demonstration chunks prefill the replay buffer ('' for none)."""
    eval_every: int = 2_000
    """Env steps between evaluations of the deterministic latent actor (learning curve)."""
    eval_episodes: int = 50
    """Episodes per learning-curve evaluation."""
    checkpoint_every: int = 2_000
    """Env steps between resumable checkpoints."""
    seed: int = 0
    """Seed of networks, warm-up noise and training episodes."""
    conservative: ConservativeConfig = ConservativeConfig()
    """Conservative exploration gate (issue 6): episodes or chunks fall back to the base policy (w ~ N(0, I))
    so that training episodes stay near or above its value; off by default."""


class LatentPolicyFn:
    """Deterministic latent actor as a chunk policy: obs [B, obs_dim] → chunks [B, H, A]."""

    def __init__(self, policy: DiffusionPolicy, actor_mean: Callable[[torch.Tensor], torch.Tensor]):
        self.policy, self.actor_mean = policy, actor_mean

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)
            on = self.policy.obs_norm.normalize(o)
            w = self.actor_mean(on).reshape(o.shape[0], self.policy.cfg.chunk_len, self.policy.cfg.action_dim)
            return self.policy.sample(o, w).numpy()


def base_policy_fn(policy: DiffusionPolicy, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The BC policy as a chunk policy with w ~ N(0, I) from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)
            w = torch.randn(o.shape[0], policy.cfg.chunk_len, policy.cfg.action_dim, generator=gen)
            return policy.sample(o, w).numpy()

    return act


# --------------------------------------------------------------------------- SAC
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
        """SB3 SAC whose warm-up samples w ~ N(0, I) (the base policy), clipped to the bound."""

        def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
            if self.num_timesteps < learning_starts:
                b = float(self.action_space.high[0])
                unscaled = np.clip(self._warmup_rng.standard_normal((n_envs, *self.action_space.shape)), -b, b)
                scaled = self.policy.scale_action(unscaled.astype(np.float32))
                return self.policy.unscale_action(scaled), scaled
            actions, buffer_actions = super()._sample_action(learning_starts, action_noise, n_envs)
            gated = getattr(self, "_gated", None)
            if gated is not None:
                # The conservative gate: chunks it assigns to the baseline run the base policy (w ~ N(0, I));
                # with ``explorer_deterministic`` the explorer's chunks run the actor's mean.
                explore = gated.explorer_mask()
                base = ~explore
                if gated.cfg.variant != "monitor" and gated.cfg.explorer_deterministic and explore.any():
                    det, _ = self.predict(self._last_obs, deterministic=True)
                    scaled = self.policy.scale_action(det)
                    actions, buffer_actions = np.array(actions), np.array(buffer_actions)
                    actions[explore] = self.policy.unscale_action(scaled)[explore]
                    buffer_actions[explore] = scaled[explore]
                if base.any():
                    b = float(self.action_space.high[0])
                    unscaled = np.clip(self._warmup_rng.standard_normal((n_envs, *self.action_space.shape)), -b, b)
                    scaled = self.policy.scale_action(unscaled.astype(np.float32))
                    actions, buffer_actions = np.array(actions), np.array(buffer_actions)
                    actions[base] = self.policy.unscale_action(scaled)[base]
                    buffer_actions[base] = scaled[base]
            return actions, buffer_actions

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


class _Progress:
    """Shared bookkeeping of both algorithms: env-step budget, episodes, evaluation, metrics."""

    def __init__(self, cfg: DSRLConfig, run: RunLog, policy: DiffusionPolicy, env_id: str, progress: bool,
                 env_steps: int = 0, episodes: int = 0, curve: list | None = None, fallbacks: int = 0,
                 chunks: int = 0):
        self.cfg, self.run, self.policy, self.env_id = cfg, run, policy, env_id
        self.fallbacks, self.chunks = fallbacks, chunks  # safe-set fallbacks among executed chunks
        self.env_steps, self.episodes = env_steps, episodes
        self.curve: list[list[float]] = curve or []
        self.recent_success: deque[float] = deque(maxlen=20)
        self.recent_return: deque[float] = deque(maxlen=20)
        self.next_eval = (env_steps // cfg.eval_every + 1) * cfg.eval_every if curve else 0
        self.next_ckpt = (env_steps // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        self.t0, self.steps0 = time.time(), env_steps
        self.bar = tqdm(total=cfg.env_steps, initial=env_steps, desc=f"dsrl-{cfg.algorithm}", unit="env-step",
                        disable=not progress)

    def on_transition(self, infos: list[dict], dones: np.ndarray, ep_returns: list[float | None]) -> None:
        n = int(sum(i.get("chunk_steps", 0) for i in infos))
        self.env_steps += n
        self.bar.update(n)
        self.chunks += len(infos)
        self.fallbacks += sum(bool(i.get("latent_fallback", False)) for i in infos)
        for info, done, ret in zip(infos, dones, ep_returns):
            if done:
                self.episodes += 1
                self.recent_success.append(float(info.get("is_success", False)))
                if ret is not None:
                    self.recent_return.append(ret)
        if any(dones) and self.recent_success:
            m = {"charts/success_rate": float(np.mean(self.recent_success)), "charts/episodes": self.episodes,
                 "charts/SPS": (self.env_steps - self.steps0) / max(time.time() - self.t0, 1e-9)}
            if self.recent_return:
                m["charts/episodic_return"] = float(np.mean(self.recent_return))
            if any("latent_fallback" in i for i in infos):
                m["safety/fallbacks"] = self.fallbacks
                m["safety/fallback_frac"] = self.fallbacks / max(self.chunks, 1)
            self.run.log(self.env_steps, m)
            self.bar.set_postfix(success=f"{m['charts/success_rate']:.2f}")

    def maybe_eval(self, actor_mean: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.env_steps < self.next_eval:
            return
        res = evaluate_chunked(self.env_id, LatentPolicyFn(self.policy, actor_mean), self.cfg.eval_episodes,
                               seed=CURVE_SEED_BASE)
        self.curve.append([self.env_steps, res.success_rate, res.return_mean])
        self.run.log(self.env_steps, {"eval/success_rate": res.success_rate, "eval/return_mean": res.return_mean})
        self.next_eval = (self.env_steps // self.cfg.eval_every + 1) * self.cfg.eval_every

    def due_checkpoint(self) -> bool:
        if self.env_steps >= self.next_ckpt or self.env_steps >= self.cfg.env_steps:
            self.next_ckpt = (self.env_steps // self.cfg.checkpoint_every + 1) * self.cfg.checkpoint_every
            return True
        return False

    def state(self) -> dict:
        return {"env_steps": self.env_steps, "episodes": self.episodes, "curve": self.curve,
                "fallbacks": self.fallbacks, "chunks": self.chunks}


EnvWrapper = Callable[[gym.Env], gym.Env]


def make_task_env(env_id: str, env_wrapper: EnvWrapper | None = None) -> gym.Env:
    """The task env, wrapped (e.g. by a safety shield) when a wrapper is given."""
    env = gym.make(env_id)
    return env_wrapper(env) if env_wrapper is not None else env


def episode_value(cfg: ConservativeConfig, task_return: float, info: dict) -> float:
    """What the gate scores an episode by: success (Clopper–Pearson) or the task return (Hoeffding)."""
    return float(bool(info.get("is_success", False))) if cfg.bound == "clopper_pearson" else task_return


def _make_vec_env(env_id: str, policy: DiffusionPolicy, cfg: DSRLConfig, seed_offset: int,
                  env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None):
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make(i: int):
        return lambda: LatentNoiseEnv(make_task_env(env_id, env_wrapper), policy, cfg.latent_noise_bound,
                                      cfg.reward_offset, safe_set, fallback_seed=cfg.seed * 1_000 + i)

    venv = DummyVecEnv([make(i) for i in range(cfg.num_envs)])
    venv.seed(TRAIN_SEED_BASE + cfg.seed * 100_000 + seed_offset)
    return venv


def _sac_state(model) -> dict[str, Any]:
    rb = model.replay_buffer
    state = {"policy": model.policy.state_dict(), "actor_opt": model.actor.optimizer.state_dict(),
             "critic_opt": model.critic.optimizer.state_dict(), "log_ent_coef": model.log_ent_coef.detach(),
             "ent_opt": model.ent_coef_optimizer.state_dict(),
             "buffer": {k: getattr(rb, k) for k in ("observations", "next_observations", "actions", "rewards",
                                                      "dones", "timeouts")},
             "torch_rng": torch.get_rng_state()}
    return state


def _train_sac(policy: DiffusionPolicy, env_id: str, cfg: DSRLConfig, run: RunLog, resume: bool,
               progress: bool, env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None
               ) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    DSRLSAC, LayerNormSACPolicy = _sb3_sac_classes()
    ckpt_dir = Path(run.checkpoint_dir)
    saved = load_checkpoint(ckpt_dir, "dsrl_trainer") if resume and (ckpt_dir / "dsrl_trainer.safetensors").exists() else None
    meta = saved[1] if saved else {}
    if saved and hasattr(run, "rewind"):
        run.rewind(int(meta["env_steps"]))
    prog = _Progress(cfg, run, policy, env_id, progress, meta.get("env_steps", 0), meta.get("episodes", 0),
                     meta.get("curve"), meta.get("fallbacks", 0), meta.get("chunks", 0))
    venv = _make_vec_env(env_id, policy, cfg, seed_offset=prog.episodes, env_wrapper=env_wrapper, safe_set=safe_set)
    # SB3 counts latent steps; chunks are ~chunk_len env steps each.
    warmup_latent = max(1, cfg.warmup_env_steps // policy.cfg.chunk_len)
    model = DSRLSAC(LayerNormSACPolicy, venv, learning_rate=cfg.lr, buffer_size=cfg.buffer_size,
                    learning_starts=warmup_latent, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
                    train_freq=1, gradient_steps=cfg.utd * cfg.num_envs, ent_coef="auto",
                    target_entropy=cfg.target_entropy, seed=cfg.seed, device="cpu",
                    policy_kwargs={"net_arch": [cfg.hidden_dim] * cfg.num_layers})
    model._warmup_rng = np.random.default_rng(cfg.seed)
    model.set_logger(_forwarding_logger(run, lambda: prog.env_steps))
    if saved:
        state = saved[0]
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
        model._warmup_rng.bit_generator.state = meta["warmup_rng"]
        torch.set_rng_state(state["torch_rng"])
    gated = GatedEnvs(cfg.conservative, cfg.num_envs) if cfg.conservative.enabled else None
    if gated is not None and "conservative" in meta:
        gated.load_state(meta["conservative"])
    model._gated = gated

    def actor_mean(obs_norm: torch.Tensor) -> torch.Tensor:
        # SB3's deterministic action: tanh(mean) rescaled to the symmetric bound.
        return model.actor(obs_norm, deterministic=True) * cfg.latent_noise_bound

    from stable_baselines3.common.callbacks import BaseCallback

    ep_ret = np.zeros(cfg.num_envs)
    task_ret = np.zeros(cfg.num_envs)

    class Hook(BaseCallback):
        def _on_step(self) -> bool:
            infos, dones, rewards = self.locals["infos"], self.locals["dones"], self.locals["rewards"]
            ep_ret[:] += rewards
            if gated is not None:
                warm = self.model.num_timesteps < warmup_latent
                for i, info in enumerate(infos):
                    gated.on_chunk(i, info)
                    task_ret[i] += rewards[i] + cfg.reward_offset * info.get("chunk_steps", 0)
                    if dones[i]:
                        gated.on_episode_end(i, episode_value(cfg.conservative, float(task_ret[i]), info),
                                             prog.env_steps + int(sum(x.get("chunk_steps", 0) for x in infos)),
                                             warm, run)
                        task_ret[i] = 0.0
            rets = [float(ep_ret[i]) if dones[i] else None for i in range(len(dones))]
            ep_ret[dones] = 0.0
            prog.on_transition(infos, dones, rets)
            if self.model.num_timesteps >= warmup_latent:
                prog.maybe_eval(actor_mean)
            if prog.due_checkpoint():
                rb = self.model.replay_buffer
                save_checkpoint(ckpt_dir, "dsrl_trainer", _sac_state(self.model),
                                {**prog.state(), "latent_steps": self.model.num_timesteps,
                                 "n_updates": self.model._n_updates, "buffer_pos": rb.pos, "buffer_full": rb.full,
                                 "warmup_rng": self.model._warmup_rng.bit_generator.state,
                                 "config": asdict(cfg),
                                 **({"conservative": gated.state()} if gated is not None else {})})
            return prog.env_steps < cfg.env_steps

    if prog.env_steps < cfg.env_steps:
        model.learn(total_timesteps=10**9, callback=Hook(), reset_num_timesteps=not saved, log_interval=4)
    prog.bar.close()
    venv.close()
    actor = LatentActor(LatentActorConfig(policy.cfg.obs_dim, policy.cfg.noise_dim, cfg.hidden_dim, cfg.num_layers,
                                          cfg.layer_norm, cfg.latent_noise_bound))
    sb3 = model.actor.state_dict()
    actor.load_state_dict({k: v for k, v in sb3.items() if k.startswith(("latent_pi.", "mu."))})
    actor.eval()
    return actor, {"model": model, "progress": prog, "gate": gated}


def train_dsrl(policy: DiffusionPolicy, env_id: str, cfg: DSRLConfig, run: RunLog, resume: bool = False,
               progress: bool = True, policy_meta: dict | None = None,
               env_wrapper: EnvWrapper | None = None, safe_set: SafeSet | None = None
               ) -> tuple[LatentPolicyFn, dict]:
    """Run DSRL on a frozen ``policy``; saves ``dsrl_policy`` in the run's checkpoints and returns the
    deterministic latent policy and training details (``gate``: the conservative gate's :class:`GatedEnvs`,
    with its per-episode records, or None when it is off).

    ``env_wrapper`` wraps every training task env (e.g. a safety shield, so training sees the limits the
    hardware enforces); its cumulative ``safety/interventions`` and ``safety/violations`` infos are logged
    by the gate's metrics. ``safe_set`` (see :class:`LatentNoiseEnv`) replaces chunks that would leave the
    safe set by the baseline's; the learner stores the latent that ran and ``safety/fallbacks`` is logged."""
    torch.manual_seed(cfg.seed)
    for p in policy.parameters():
        p.requires_grad_(False)
    if cfg.algorithm == "sac":
        actor, details = _train_sac(policy, env_id, cfg, run, resume, progress, env_wrapper, safe_set)
    elif cfg.algorithm == "na":
        from steer.agent.dsrl_na import train_na

        actor, details = train_na(policy, env_id, cfg, run, resume, progress, _Progress, env_wrapper, safe_set)
    else:
        raise ValueError(f"unknown DSRL algorithm {cfg.algorithm!r}; choose 'sac' or 'na'.")
    save_dsrl_policy(run.checkpoint_dir, actor, policy,
                     {**(policy_meta or {}), "algorithm": cfg.algorithm, "env_steps": details["progress"].env_steps})
    details["actor"] = actor
    return LatentPolicyFn(policy, actor), details
