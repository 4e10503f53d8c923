"""CaRL PPO: route-completion PPO over the native driving vector env, in the CleanRL style.

One rollout of ``num_steps`` over the envs, GAE, then ``update_epochs`` passes of clipped-ratio
policy loss, clipped value loss and an entropy bonus over minibatches. The same code runs under
``torchrun --nproc_per_node N``: each rank owns its own envs, the model is wrapped in
DistributedDataParallel (gloo on CPU, NCCL on GPU), advantage statistics and episode counts are
summed over ranks, so N ranks train as one process on the combined batch would.

The trainer sees the driving env only through the gymnasium API: its Dict observation space (the
network is built from it), its infos, and ``env.metadata`` (``infractions``, ``episode_metrics``,
``distance_info``, which name the info keys that :class:`EpisodeStats` summarizes).

Read top to bottom: :func:`gae`, :func:`ppo_update`, :class:`EpisodeStats`, :func:`train_ppo`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from steer.agent.checkpoint import load_checkpoint, save_checkpoint
from steer.agent.ppo_config import NetConfig, PPOConfig
from steer.agent.ppo_nets import CarlActorCritic, obs_shapes
from steer.agent.runlog import RunLog, to_jsonable
from steer.driving.score import per_km

CHECKPOINT = "last"
"""Name of the checkpoint a run keeps (overwritten atomically)."""
KEPT = "kept"
"""Checkpoint name of the policy a run keeps when it is not the last one (``steer drive train``'s
selection on a validation world); :func:`load_policy` prefers it."""


class PPOConfigError(ValueError):
    """A PPO setting that cannot work (batch does not split, missing checkpoint to resume)."""

    user_facing = True


# ---------------------------------------------------------------------------- math
def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns, all [T, N].

    ``dones[t]`` is True when the episode ended with step t (the env's same-step autoreset means
    ``values[t + 1]`` then belongs to the next episode and is not bootstrapped); ``last_value`` [N]
    is the value of the observation after the last step. Finishing the route counts as done too:
    no progress reward is left after it.
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else values[t + 1]
        live = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_value * live - values[t]
        last = delta + gamma * lam * live * last
        adv[t] = last
    return adv, adv + values


class Batch(NamedTuple):
    """One rollout, flattened to [B, ...] (what :func:`ppo_update` trains on)."""

    obs: dict[str, torch.Tensor]
    """Observation tensors by key (the env's Dict space)."""
    x: torch.Tensor
    """Beta samples in [0, 1] (actions are 2 x - 1)."""
    logprob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    cost_advantages: torch.Tensor | None = None
    """PPO-Lag's cost advantages, returns and values (None or zeros without the Lagrangian)."""
    cost_returns: torch.Tensor | None = None
    cost_values: torch.Tensor | None = None
    guide: torch.Tensor | None = None
    """The scripted driver's actions as Beta samples in (0, 1) (None without ``warm_start.ppo_coef``)."""
    guide_weight: torch.Tensor | None = None
    """Weight of each sample in the imitation term (1 + ``warm_start.focus_weight`` where the driver
    reacts to something; None: all alike)."""

    def take(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> "Batch":
        """Rows ``idx`` of every field, on ``device``."""
        def pick(t):
            if t is None:
                return None
            if isinstance(t, dict):
                return {k: v[idx].to(device, non_blocking=True) for k, v in t.items()}
            return t[idx].to(device, non_blocking=True)

        return Batch(*(pick(t) for t in self))


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity in one process)."""
    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def normalize_advantages(adv: torch.Tensor) -> torch.Tensor:
    """(A - mean) / (std + 1e-8) over the minibatch of all ranks (unbiased std, as ``Tensor.std``)."""
    stats = _all_sum(torch.stack([adv.sum(), (adv * adv).sum(), torch.tensor(float(adv.numel()), device=adv.device)]))
    n = stats[2]
    mean = stats[0] / n
    var = (stats[1] - n * mean * mean) / (n - 1.0)
    return (adv - mean) / (var.clamp_min(0.0).sqrt() + 1e-8)


def value_loss(new: torch.Tensor, old: torch.Tensor, returns: torch.Tensor, clip: float | None) -> torch.Tensor:
    """0.5 * mean squared error; with ``clip``, the larger of the errors of the new value and of the
    value moved at most ``clip`` from the rollout's (PPO2 / CleanRL value clipping)."""
    if clip is None:
        return 0.5 * ((new - returns) ** 2).mean()
    clipped = old + (new - old).clamp(-clip, clip)
    return 0.5 * torch.max((new - returns) ** 2, (clipped - returns) ** 2).mean()


def lagrangian_advantages(adv: torch.Tensor, cost_adv: torch.Tensor, lam: float) -> torch.Tensor:
    """PPO-Lag's policy advantage (A_r − λ·A_c) / (1 + λ); the cost advantages are centred (over all ranks)."""
    stats = _all_sum(torch.stack([cost_adv.sum(), torch.tensor(float(cost_adv.numel()), device=cost_adv.device)]))
    centred = cost_adv - stats[0] / stats[1]
    return (adv - lam * centred) / (1.0 + lam)


def update_multiplier(lam: float, episode_cost: float, cfg) -> float:
    """One projected gradient-ascent step of the Lagrange multiplier: max(0, λ + lr · (J_c − limit))."""
    return max(0.0, lam + cfg.lambda_lr * (episode_cost - cfg.cost_limit))


def ppo_update(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, minibatches: list[torch.Tensor],
               cfg: PPOConfig, device: torch.device | str = "cpu", lagrange: float | None = None,
               policy: bool = True, guide_coef: float = 0.0) -> dict[str, float]:
    """Train on one rollout: one gradient step per index set in ``minibatches`` (epochs included);
    ``policy=False`` trains the critic's head alone (the policy stays as it is).

    ``model`` may be DistributedDataParallel-wrapped: it then averages the gradients over ranks, and
    each rank passes its own share of every minibatch. With ``lagrange`` (PPO-Lag's λ) the model has
    a cost head: the policy follows :func:`lagrangian_advantages` and the cost critic is trained too.
    With ``guide_coef`` > 0 the loss adds that weight times the negative log-likelihood of
    ``batch.guide`` (the imitation term of ``warm_start.ppo_coef``).
    """
    clipfracs, stats = [], {}
    for idx in minibatches:
        mb = batch.take(idx, device)
        guided = guide_coef > 0 and mb.guide is not None
        out = model(mb.obs, mb.x, critic_head_only=not policy, **({"guide": mb.guide} if guided else {}))
        _, newlogprob, entropy, newvalue = out[:4]
        guide_loss = weighted_nll(out[4], cfg.warm_start.action_weights, mb.guide_weight) if guided else None
        cost_v_loss = None
        if lagrange is not None:
            newvalue, newcost = newvalue[:, 0], newvalue[:, 1]
            cost_v_loss = value_loss(newcost, mb.cost_values, mb.cost_returns,
                                     cfg.clip_coef if cfg.clip_vloss else None)
        logratio = newlogprob - mb.logprob
        ratio = logratio.exp()
        with torch.no_grad():
            # http://joschu.net/blog/kl-approx.html
            old_approx_kl = (-logratio).mean()
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfracs.append(((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item())
        adv = normalize_advantages(mb.advantages) if cfg.norm_adv else mb.advantages
        if lagrange is not None:
            adv = lagrangian_advantages(adv, mb.cost_advantages, lagrange)
        pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
        v_loss = value_loss(newvalue, mb.values, mb.returns, cfg.clip_coef if cfg.clip_vloss else None)
        entropy_loss = entropy.mean()
        # Critic only: the policy terms count 0 (not left out: DDP expects a gradient for every parameter).
        policy_terms = pg_loss - cfg.ent_coef * entropy_loss
        if guide_loss is not None:
            policy_terms = policy_terms + guide_coef * guide_loss
        loss = policy_terms * (1.0 if policy else 0.0) + cfg.vf_coef * v_loss
        if cost_v_loss is not None:
            loss = loss + cfg.vf_coef * cost_v_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        stats = {"losses/value_loss": v_loss.item(), "losses/policy_loss": pg_loss.item(),
                 "losses/entropy": entropy_loss.item(), "losses/old_approx_kl": old_approx_kl.item(),
                 "losses/approx_kl": approx_kl.item(), "losses/grad_norm": float(grad_norm)}
        if cost_v_loss is not None:
            stats["losses/cost_value_loss"] = cost_v_loss.item()
        if guide_loss is not None:
            stats["losses/imitation_nll"] = guide_loss.item()
    stats["losses/clipfrac"] = float(np.mean(clipfracs)) if clipfracs else 0.0
    return stats


class ReturnScale:
    """Running standard deviation of the discounted return per env (gymnasium's NormalizeReward): the
    trainer divides rewards by :meth:`scale` (the env's own rewards and episode returns are untouched)."""

    def __init__(self, num_envs: int, gamma: float, eps: float = 1e-8):
        self.gamma, self.eps = gamma, eps
        self.ret = np.zeros(num_envs)
        self.count, self.mean, self.var = eps, 0.0, 1.0

    def update(self, reward: np.ndarray, done: np.ndarray) -> None:
        """Add one step's rewards; ``done`` envs start a new return."""
        self.ret = self.ret * self.gamma + reward
        n = len(reward)
        b_mean, b_var = float(self.ret.mean()), float(self.ret.var())
        delta, tot = b_mean - self.mean, self.count + n
        self.mean += delta * n / tot
        self.var = (self.var * self.count + b_var * n + delta * delta * self.count * n / tot) / tot
        self.count = tot
        self.ret[done] = 0.0

    def scale(self) -> float:
        """The divisor of the rewards."""
        return float(np.sqrt(self.var + self.eps))


def _average_gradients(model: nn.Module) -> None:
    """Mean of the gradients over ranks (what DDP does inside ``backward``; identity in one process)."""
    if _world() > 1:
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= _world()


def beta_targets(actions: np.ndarray) -> torch.Tensor:
    """Actions in [-1, 1] as Beta targets in (0, 1), kept off the edges where the log-density is unbounded."""
    return torch.from_numpy((np.asarray(actions).clip(-1.0, 1.0) + 1.0) / 2.0).float().clamp(0.01, 0.99)


def weighted_nll(logp: torch.Tensor, weights: tuple[float, ...], sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over samples of the negative log-likelihood per action dimension ``logp`` [B, action_dim],
    the dimensions weighted by ``weights`` (``WarmStartConfig.action_weights``) and the samples by
    ``sample_weights`` [B] (a weighted mean; None: all alike)."""
    if len(weights) != logp.shape[-1]:
        raise PPOConfigError(f"warm_start.action_weights has {len(weights)} weights for {logp.shape[-1]} action "
                             "dimensions")
    nll = -(logp * logp.new_tensor(weights)).sum(-1)
    if sample_weights is None:
        return nll.mean()
    return (nll * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)


def imitation_loss(model: CarlActorCritic, obs: dict[str, torch.Tensor], targets: torch.Tensor, head_l2: float,
                   weights: tuple[float, ...] = (1.0, 1.0), sample_weights: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, α, β): the Beta negative log-likelihood of ``targets`` (in (0, 1), :func:`beta_targets`),
    its action dimensions weighted by ``weights`` and its samples by ``sample_weights``, plus ``head_l2``
    times the mean squared raw output of the policy head (see ``WarmStartConfig.head_l2``)."""
    from steer.agent.ppo_nets import beta_log_prob, beta_params

    raw = model.policy_head(model.features(obs))
    alpha, beta = beta_params(raw)
    nll = weighted_nll(beta_log_prob(targets, alpha, beta), weights, sample_weights)
    return nll + head_l2 * raw.pow(2).mean(), alpha, beta


def warm_start(model: CarlActorCritic, envs, cfg: PPOConfig, seed: int, device: torch.device | str = "cpu",
               deadline: float | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any], int, dict[str, float]]:
    """DAgger imitation of the env's scripted driver (see :class:`WarmStartConfig`); returns the first
    observation and info of fresh episodes for PPO (with the driver's labels when ``ppo_coef`` > 0),
    the env steps taken by this rank and the last losses. With a ``deadline`` (``time.time()``) no round
    starts after it (every rank stops after the same round): a run's time limit holds during the
    warm start too, whose rounds take far longer on the BEV than on the vector observation."""
    ws = cfg.warm_start
    obs, info = envs.reset(seed=seed, options={"expert_labels": True})
    if "expert_action" not in info:
        raise PPOConfigError(f"{cfg.env_id} gives no expert labels; set warm_start.rounds to 0.")
    optimizer = torch.optim.Adam(model.parameters(), lr=ws.learning_rate)
    gen = torch.Generator().manual_seed(seed)
    data: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    labels: list[np.ndarray] = []
    focus: list[np.ndarray] = []  # 1 where the driver reacts to something (see WarmStartConfig.focus_weight)
    steps, stats = 0, {}
    for rnd in range(ws.rounds):
        decay = rnd / max(ws.rounds - 1, 1)
        optimizer.param_groups[0]["lr"] = ws.learning_rate * (1.0 - (1.0 - ws.final_lr_fraction) * decay)
        model.eval()
        for _ in range(ws.steps):
            for k, v in obs.items():
                data[k].append(v)
            labels.append(info["expert_action"])
            focus.append(np.asarray(info.get("expert_focus", np.zeros(len(info["expert_action"]))), np.float32))
            act = info["expert_action"] if rnd == 0 else model.act(obs_to_torch(obs, device)).cpu().numpy()
            obs, _, _, _, info = envs.step(act)
            steps += len(act)
        model.train()
        keep = labelled_sample_limit(data, ws, _world())
        if sum(len(v) for v in labels) > keep:  # forget the oldest rounds
            while len(labels) > 1 and sum(len(v) for v in labels) - len(labels[0]) >= keep:
                labels.pop(0)
                focus.pop(0)
                for v in data.values():
                    v.pop(0)
        x_all = {k: torch.from_numpy(np.concatenate(v)) for k, v in data.items()}
        y_all = beta_targets(np.concatenate(labels))
        focus_all = np.concatenate(focus)
        w_all = torch.from_numpy(1.0 + ws.focus_weight * focus_all) if ws.focus_weight > 0 else None
        mb = max(1, ws.minibatch_size // _world())
        for idx in minibatch_indices(len(y_all), mb, ws.epochs, gen):
            o = {k: v[idx].to(device) for k, v in x_all.items()}
            loss, alpha, beta = imitation_loss(model, o, y_all[idx].to(device), ws.head_l2, ws.action_weights,
                                               None if w_all is None else w_all[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _average_gradients(model)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
        with torch.no_grad():
            mean_err = (2.0 * alpha / (alpha + beta) - 1.0 - (2.0 * y_all[idx].to(device) - 1.0)).abs().mean(0)
        stats = {"warm_start/nll": loss.item(), "warm_start/steer_error": mean_err[0].item(),
                 "warm_start/accel_error": mean_err[1].item(), "warm_start/samples": float(len(y_all)),
                 "warm_start/rounds": float(rnd + 1), "warm_start/focus_share": float(focus_all.mean()),
                 "warm_start/learning_rate": optimizer.param_groups[0]["lr"]}
        if deadline is not None and _all_sum(torch.tensor(float(time.time() > deadline))).item() > 0:
            break
    obs, info = envs.reset(seed=seed + 1, options={"expert_labels": ws.ppo_coef > 0})
    return obs, info, steps, stats


def labelled_sample_limit(data: dict[str, list[np.ndarray]], ws, world: int) -> int:
    """Labelled samples one rank keeps in the warm start: ``max_samples`` and ``max_memory_mb`` (its
    observations' bytes) shared among ``world`` ranks, whichever is smaller; at least one."""
    per_sample = sum(v[0].nbytes / max(len(v[0]), 1) for v in data.values() if v)
    by_memory = ws.max_memory_mb * 2**20 / world / per_sample if per_sample > 0 else float("inf")
    return max(1, int(min(ws.max_samples // world, by_memory)))


def minibatch_indices(n: int, minibatch: int, epochs: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``epochs`` random permutations of ``range(n)`` cut into minibatches of ``minibatch``."""
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        out += [perm[i : i + minibatch] for i in range(0, n, minibatch)]
    return out


# ---------------------------------------------------------------------------- model and checkpoints
def make_env(num_envs: int, cfg: PPOConfig):
    """``num_envs`` envs of ``cfg.env_id`` as one native vector env (gymnasium's vector entry point)."""
    import gymnasium as gym

    return gym.make_vec(cfg.env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", config=cfg.env)


def make_model(space, net: NetConfig, cost_head: bool = False) -> CarlActorCritic:
    """The actor-critic for a Dict observation ``space`` (an env's ``single_observation_space``)."""
    return CarlActorCritic(obs_shapes(space), 2, net, cost_head)


def config_from_dict(cls: type, data: dict[str, Any]):
    """Rebuild a (nested, frozen) dataclass saved as JSON; lists become tuples again (hashable)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def load_policy(checkpoint_dir: Path, name: str | None = None) -> tuple[CarlActorCritic, PPOConfig, dict[str, Any]]:
    """(model in eval mode, the run's PPOConfig, checkpoint meta) from a trainer's checkpoint: ``name``,
    or by default the run's kept policy (:data:`KEPT`) where it has one, else its last."""
    if name is None:
        name = KEPT if (Path(checkpoint_dir) / f"{KEPT}.safetensors").exists() else CHECKPOINT
    state, meta = load_checkpoint(Path(checkpoint_dir), name)
    cfg = config_from_dict(PPOConfig, meta["ppo_config"])
    shapes = {k: tuple(v) for k, v in meta["obs_shapes"].items()}
    model = CarlActorCritic(shapes, 2, cfg.net, cost_head=cfg.lagrangian.enabled)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, meta


def policy_meta(env, cfg: PPOConfig) -> dict[str, Any]:
    """What a checkpoint records to rebuild, run and export the policy without the env: the observation
    shapes and field names, the control rate (from the simulator's step) and the config."""
    return {"obs_shapes": obs_shapes(env.single_observation_space), "obs_fields": env.metadata.get("obs_fields", {}),
            "control_rate_hz": float(env.metadata.get("control_rate_hz", 0.0)), "ppo_config": to_jsonable(cfg)}


def obs_to_torch(obs: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a vector-env observation, by key."""
    return {k: torch.from_numpy(v).to(device) for k, v in obs.items()}


# ---------------------------------------------------------------------------- distributed
def setup_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


# ---------------------------------------------------------------------------- training
def check_config(cfg: PPOConfig, world: int = 1, infractions: typing.Sequence[str] | None = None) -> None:
    """Raise :class:`PPOConfigError` when the batch does not split over ranks and minibatches, or PPO-Lag
    names an infraction that is not among ``infractions`` (the env's ``metadata["infractions"]``)."""
    if cfg.num_envs % world or cfg.minibatch_size % world:
        raise PPOConfigError(f"num_envs ({cfg.num_envs}) and minibatch_size ({cfg.minibatch_size}) must divide "
                             f"by the number of processes ({world}).")
    unknown = [k for k in cfg.lagrangian.cost_infractions if infractions is not None and k not in infractions]
    if cfg.lagrangian.enabled and unknown:
        raise PPOConfigError(f"unknown cost infractions {unknown}; choose from {', '.join(infractions)}.")
    if cfg.batch_size % cfg.minibatch_size:
        raise PPOConfigError(f"the rollout (num_envs x num_steps = {cfg.batch_size}) must split into minibatches "
                             f"of {cfg.minibatch_size}.")


class EpisodeStats:
    """Sums over finished episodes from an env's infos (reducible over ranks): return, length, the
    env's ``episode_metrics`` (means per episode) and its ``infractions`` (per episode and per km of
    the ``distance_info`` key)."""

    def __init__(self, metadata: dict[str, Any]):
        self.metrics = tuple(metadata.get("episode_metrics", ()))
        self.infractions = tuple(metadata.get("infractions", ()))
        self.distance = metadata.get("distance_info")
        self.keys = ("episodes", "episode_return", "episode_length", *self.metrics, *self.infractions,
                     *((self.distance,) if self.distance else ()))
        self.sums = np.zeros(len(self.keys))

    def add(self, infos: dict[str, np.ndarray], done: np.ndarray) -> None:
        """Count the episodes that ``done`` marks (infos describe their last step)."""
        if done.any():
            self.sums += [done.sum()] + [np.asarray(infos[k], np.float64)[done].sum() for k in self.keys[1:]]

    def summary(self, reduce: typing.Callable | None = None) -> dict[str, float]:
        """Means per episode and infractions per km; ``reduce`` sums a tensor over ranks (DDP)."""
        sums = self.sums
        if reduce is not None:
            sums = reduce(torch.from_numpy(sums.copy())).numpy()
        s = dict(zip(self.keys, sums))
        n = float(s["episodes"])
        out = {"episodes": n}
        if n == 0:
            return out
        out.update({"episodic_return": s["episode_return"] / n, "episodic_length": s["episode_length"] / n})
        out.update({k: s[k] / n for k in self.metrics})
        for k in self.infractions:
            out[f"infractions/{k}"] = s[k] / n
        if self.distance:
            km = float(s[self.distance]) / 1000.0
            out["km_driven"] = km
            if self.infractions:  # a rate without distance is None: left out of the logged scalars
                rates = per_km({k: s[k] for k in self.infractions}, km)
                out.update({k: v for k, v in rates.items() if v is not None})
        return out


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_ppo` returns (rank 0's view; episode figures are over all ranks)."""

    global_step: int
    updates: int
    sps: float
    episodes: dict[str, float]
    """Episode statistics of the last rollouts (see :class:`EpisodeStats`)."""
    model: CarlActorCritic
    lagrange: float | None = None
    """PPO-Lag's multiplier at the end (None without the Lagrangian)."""
    seconds: float = 0.0
    """Wall-clock seconds of this call's training."""
    cpu_seconds: float = 0.0
    """CPU seconds this process spent in them (all its threads)."""


def train_ppo(cfg: PPOConfig, run: RunLog, resume: bool = False, progress: bool = False,
              max_updates: int | None = None, time_limit_s: float | None = None,
              on_update: typing.Callable[[int, float, nn.Module], None] | None = None) -> TrainResult:
    """Train a CaRL PPO driving policy; writes metrics to ``run`` and checkpoints to ``run.checkpoint_dir``.

    ``resume`` continues from the ``last`` checkpoint (model, optimizer, schedule, step, random
    state). ``max_updates`` stops early after that many updates in this call and ``time_limit_s``
    after the first update that ends past that many seconds (a checkpoint is written either way);
    the learning-rate schedule still follows ``cfg.total_timesteps``. ``on_update(global_step,
    seconds, model)`` is called on rank 0 after each update (e.g. to keep snapshots for a learning
    curve; its time counts in the run's).
    """
    rank, world = setup_distributed()
    check_config(cfg, world)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    if cfg.device == "auto":
        device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    n_local, mb_local = cfg.num_envs // world, cfg.minibatch_size // world
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    envs = make_env(n_local, cfg)
    check_config(cfg, world, envs.metadata.get("infractions"))
    space = envs.single_observation_space
    lag = cfg.lagrangian
    model = make_model(space, cfg.net, cost_head=lag.enabled).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    start_update, global_step = 1, 0
    lagrange = lag.lambda_init if lag.enabled else None
    if resume:
        state, meta = load_checkpoint(Path(run.checkpoint_dir), CHECKPOINT)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_update, global_step = int(meta["update"]) + 1, int(meta["global_step"])
        if lagrange is not None:
            lagrange = float(meta.get("lagrange", lagrange))
        if rank == 0:
            run.rewind(global_step)
    ddp = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # Sampling and minibatch order differ per rank and per resume point, and are reproducible.
    torch.manual_seed(cfg.seed + 1000 * rank + 7919 * (start_update - 1))
    shuffle = torch.Generator().manual_seed(cfg.seed + 1000 * rank + 7919 * (start_update - 1) + 1)
    guided = cfg.warm_start.ppo_coef > 0
    next_obs, next_info = envs.reset(seed=cfg.seed + 1000 * rank + 7919 * (start_update - 1),
                                     options={"expert_labels": guided})
    if guided and "expert_action" not in next_info:
        raise PPOConfigError(f"{cfg.env_id} gives no expert labels; set warm_start.ppo_coef to 0.")

    T, N = cfg.num_steps, n_local
    obs_buf = {k: torch.zeros((T, N) + s.shape, dtype=torch.from_numpy(np.zeros(0, s.dtype)).dtype)
               for k, s in space.spaces.items()}
    x_buf = torch.zeros((T, N, 2))
    guide_buf = torch.zeros((T, N, 2)) if guided else None
    focus_buf = torch.zeros((T, N)) if guided and cfg.warm_start.focus_weight > 0 else None
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros((T, N)) for _ in range(4))
    cost_buf, cval_buf = torch.zeros((T, N)), torch.zeros((T, N))
    ep_cost = np.zeros(N)
    reward_scale = ReturnScale(N, cfg.gamma) if cfg.norm_reward else None
    tracker = EpisodeStats(envs.metadata)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_timesteps, initial=global_step, unit="step", desc="ppo", smoothing=0.1)
    last_update = cfg.num_updates if max_updates is None else min(cfg.num_updates, start_update - 1 + max_updates)
    t_start, cpu_start, steps_start, update = time.time(), time.process_time(), global_step, start_update - 1
    episodes: dict[str, float] = {}
    value_only_until = start_update - 1
    if cfg.warm_start.rounds > 0 and not resume:
        next_obs, next_info, ws_steps, ws_stats = warm_start(
            model, envs, cfg, cfg.seed + 1000 * rank + 17, device,
            deadline=None if time_limit_s is None else t_start + time_limit_s)
        global_step += ws_steps * world
        value_only_until = cfg.warm_start.value_updates
        if rank == 0:
            run.log(global_step, {**ws_stats, "charts/minutes": (time.time() - t_start) / 60.0})
    for update in range(start_update, last_update + 1):
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (update - 1.0) / cfg.num_updates) * cfg.learning_rate
        # ---- rollout
        model.eval()
        cost_sum, cost_episodes = 0.0, 0.0
        for t in range(T):
            obs_t = obs_to_torch(next_obs)
            for k, v in obs_t.items():
                obs_buf[k][t] = v
            if guide_buf is not None:
                guide_buf[t] = beta_targets(next_info["expert_action"])
            if focus_buf is not None and "expert_focus" in next_info:
                focus_buf[t] = torch.from_numpy(np.asarray(next_info["expert_focus"], np.float32))
            with torch.no_grad():
                x, logp, _, value = model({k: v.to(device) for k, v in obs_t.items()})
            if lagrange is not None:
                value, cval_buf[t] = value[:, 0], value[:, 1].cpu()
            x_buf[t], logp_buf[t], val_buf[t] = x.cpu(), logp.cpu(), value.cpu()
            next_obs, reward, term, trunc, infos = envs.step((2.0 * x - 1.0).cpu().numpy())
            next_info = infos
            done = term | trunc
            if reward_scale is not None:
                reward_scale.update(reward, done)
                reward = reward / reward_scale.scale()
            rew_buf[t] = torch.from_numpy(reward)
            done_buf[t] = torch.from_numpy(done.astype(np.float32))
            if lagrange is not None:
                cost = np.sum([np.asarray(infos[k], np.float32) for k in lag.cost_infractions], axis=0)
                cost_buf[t] = torch.from_numpy(cost)
                ep_cost += cost
                cost_sum += float(ep_cost[done].sum())
                cost_episodes += float(done.sum())
                ep_cost[done] = 0.0
            tracker.add(infos, done)
        global_step += cfg.batch_size
        with torch.no_grad():
            last_value = model(obs_to_torch(next_obs, device))[3].cpu()
        lag_stats: dict[str, float] = {}
        if lagrange is not None:
            last_value, last_cost = last_value[:, 0], last_value[:, 1]
            cadv, cret = gae(cost_buf, cval_buf, done_buf, last_cost, lag.cost_gamma, cfg.gae_lambda)
            # λ follows the episodes that ended in this rollout (all ranks), before the policy moves.
            totals = _all_sum(torch.tensor([cost_sum, cost_episodes], dtype=torch.float64))
            if totals[1] > 0:
                episode_cost = float(totals[0] / totals[1])
                lagrange = update_multiplier(lagrange, episode_cost, lag)
                lag_stats["lagrangian/episode_cost"] = episode_cost
            lag_stats["lagrangian/lambda"] = lagrange
        else:
            cadv = cret = torch.zeros_like(rew_buf)
        adv, ret = gae(rew_buf, val_buf, done_buf, last_value, cfg.gamma, cfg.gae_lambda)
        batch = Batch({k: v.reshape((T * N,) + v.shape[2:]) for k, v in obs_buf.items()}, x_buf.reshape(T * N, -1), logp_buf.reshape(-1),
                      adv.reshape(-1), ret.reshape(-1), val_buf.reshape(-1),
                      cadv.reshape(-1), cret.reshape(-1), cval_buf.reshape(-1),
                      guide_buf.reshape(T * N, -1) if guide_buf is not None else None,
                      1.0 + cfg.warm_start.focus_weight * focus_buf.reshape(-1) if focus_buf is not None else None)
        # ---- learn
        model.train()
        mbs = minibatch_indices(T * N, mb_local, cfg.update_epochs, shuffle)
        ws = cfg.warm_start
        guide_coef = ws.ppo_coef * (max(0.0, 1.0 - global_step / ws.ppo_decay_steps) if ws.ppo_decay_steps else 1.0)
        stats = ppo_update(ddp, optimizer, batch, mbs, cfg, device, lagrange, policy=update > value_only_until,
                           guide_coef=guide_coef)
        if guided:
            stats["charts/imitation_coef"] = guide_coef
        # ---- report
        y_pred, y_true = batch.values.numpy(), batch.returns.numpy()
        var_y = np.var(y_true)
        episodes = tracker.summary(reduce=_all_sum)
        sps = (global_step - steps_start) / max(time.time() - t_start, 1e-9)
        # Steps per CPU-second of this process: what the SPS would be on an otherwise idle core.
        sps_cpu = (global_step - steps_start) / max(time.process_time() - cpu_start, 1e-9)
        if rank == 0:
            metrics = {"charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/SPS": sps,
                       "charts/SPS_per_cpu": sps_cpu, "charts/minutes": (time.time() - t_start) / 60.0,
                       **stats, **lag_stats,
                       **({"charts/reward_scale": reward_scale.scale()} if reward_scale is not None else {}),
                       "losses/explained_variance": float("nan") if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
                       **{f"charts/{k}" if "/" not in k else k: v for k, v in episodes.items()}}
            run.log(global_step, metrics)
            if bar is not None:
                bar.update(cfg.batch_size)
                if episodes.get("episodes", 0):
                    bar.set_postfix(rc=f"{episodes['route_completion']:.2f}", ds=f"{episodes['driving_score']:.2f}")
        if episodes.get("episodes", 0):
            tracker = EpisodeStats(envs.metadata)
        out_of_time = time_limit_s is not None and time.time() - t_start > time_limit_s
        if world > 1:  # every rank stops at the same update
            out_of_time = bool(_all_sum(torch.tensor(float(out_of_time))).item())
        if update % cfg.checkpoint_every == 0 or update == last_update or out_of_time:
            if rank == 0:
                save_checkpoint(Path(run.checkpoint_dir), CHECKPOINT,
                                {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                                {"update": update, "global_step": global_step, **policy_meta(envs, cfg), "world_size": world,
                                 **({"lagrange": lagrange} if lagrange is not None else {})})
            if world > 1:
                dist.barrier()
        if on_update is not None and rank == 0:
            on_update(global_step, time.time() - t_start, model)
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    sps = (global_step - steps_start) / max(time.time() - t_start, 1e-9)
    return TrainResult(global_step, update, sps, episodes, model, lagrange, time.time() - t_start,
                       time.process_time() - cpu_start)
