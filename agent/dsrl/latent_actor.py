"""The latent actor of DSRL as a plain torch module: normalized obs → latent noise w.

Layout matches stable-baselines3's SAC actor (``latent_pi`` MLP with layer norm,
``mu`` head, tanh squashing, scaled to ±b), so weights trained there load directly,
and export/evaluation need neither SB3 nor its replay machinery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from steer.agent.bc import policy_from_state
from steer.agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from steer.agent.diffusion import DiffusionPolicy


@dataclass(frozen=True)
class LatentActorConfig:
    """Shape of a latent actor."""

    obs_dim: int
    noise_dim: int
    hidden_dim: int
    num_layers: int
    layer_norm: bool
    latent_noise_bound: float


def mlp(in_dim: int, hidden: int, layers: int, layer_norm: bool) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods.append(nn.Linear(d, hidden))
        if layer_norm:
            mods.append(nn.LayerNorm(hidden))
        mods.append(nn.ReLU())
        d = hidden
    return nn.Sequential(*mods)


class LatentActor(nn.Module):
    """Deterministic latent actor: w = b · tanh(mu(MLP(obs_norm)))."""

    def __init__(self, cfg: LatentActorConfig):
        super().__init__()
        self.cfg = cfg
        self.latent_pi = mlp(cfg.obs_dim, cfg.hidden_dim, cfg.num_layers, cfg.layer_norm)
        self.mu = nn.Linear(cfg.hidden_dim, cfg.noise_dim)

    def forward(self, obs_norm: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mu(self.latent_pi(obs_norm))) * self.cfg.latent_noise_bound


def save_dsrl_policy(directory, actor: LatentActor, base: DiffusionPolicy, meta: dict[str, Any]) -> None:
    """A self-contained DSRL policy: the latent actor and the frozen base policy it steers."""
    save_checkpoint(directory, "dsrl_policy", {"actor": actor.state_dict(), "weights": base.state_dict()},
                    {"kind": "dsrl", "actor": asdict(actor.cfg), "diffusion": asdict(base.cfg), **meta})


def load_dsrl_policy(directory) -> tuple[LatentActor, DiffusionPolicy, dict[str, Any]]:
    state, meta = load_checkpoint(directory, "dsrl_policy")
    if meta.get("kind") != "dsrl":
        raise CheckpointError(f"{directory}/dsrl_policy is a {meta.get('kind')!r} checkpoint, not a DSRL policy.")
    actor = LatentActor(LatentActorConfig(**meta["actor"]))
    actor.load_state_dict(state["actor"])
    actor.eval()
    base = policy_from_state(state, meta)
    return actor, base, meta
