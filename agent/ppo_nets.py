"""The CaRL actor-critic over a Dict observation: a CNN over the BEV (when the observation has one),
an MLP over the flat inputs (the structured ``vector`` and the ``measurements``), a Beta policy
head and a value head that alone also sees the privileged ``value_inputs``.

Which encoder runs follows the observation space alone (:func:`obs_shapes`): with a ``bev`` the
flat inputs go through the small measurement MLP (CaRL's network); without one, through the wider
``vector_layers`` MLP (the CPU setting).

The Beta distribution lives on [0, 1]; actions in [-1, 1] are ``2 x - 1``. Its log-probability and
entropy are written out here (lgamma / digamma) so that they can be checked against
``torch.distributions.Beta`` and stay cheap on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steer.agent.ppo_config import NetConfig

BETA_EPS = 1e-6
"""Samples are kept this far inside (0, 1) so that log-probabilities stay finite."""


def beta_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α, β = softplus(raw) + 1 from the head's output [..., 2 * action_dim] (both > 1: unimodal)."""
    a, b = raw.chunk(2, dim=-1)
    return F.softplus(a) + 1.0, F.softplus(b) + 1.0


def beta_log_prob(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Log-density of Beta(α, β) at x in (0, 1), elementwise."""
    x = x.clamp(BETA_EPS, 1.0 - BETA_EPS)
    log_norm = torch.lgamma(alpha + beta) - torch.lgamma(alpha) - torch.lgamma(beta)
    return log_norm + (alpha - 1.0) * torch.log(x) + (beta - 1.0) * torch.log1p(-x)


def beta_entropy(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Differential entropy of Beta(α, β), elementwise."""
    total = alpha + beta
    log_b = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(total)
    return (log_b - (alpha - 1.0) * torch.digamma(alpha) - (beta - 1.0) * torch.digamma(beta)
            + (total - 2.0) * torch.digamma(total))


def beta_mean(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Mean α / (α + β): the deterministic action at evaluation."""
    return alpha / (alpha + beta)


def layer_init(layer: nn.Module, std: float = 2**0.5, bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias (CleanRL's initialization)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class BevEncoder(nn.Module):
    """Strided convolutions over the BEV (uint8 [B, C, H, W] scaled to [0, 1]) to a feature vector."""

    def __init__(self, in_channels: int, size: int, cfg: NetConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, out in enumerate(cfg.cnn_channels):
            conv = nn.Conv2d(c, out, 4, 4) if i == 0 else nn.Conv2d(c, out, 3, 2, 1)
            layers += [layer_init(conv), nn.ReLU()]
            c = out
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, size, size)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, cfg.bev_features)), nn.ReLU())

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        if bev.dtype == torch.uint8:
            # In place on the fresh copy: the uint8 -> float pass over a large batch is costly on a CPU.
            x = bev.float().mul_(1.0 / 255.0)
        else:
            x = bev * (1.0 / 255.0)
        return self.fc(self.convs(x))


VALUE_ONLY = "value_inputs"
"""Observation key the critic alone sees."""


def obs_shapes(space) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a gymnasium Dict observation space, in its order (what the network is built from)."""
    return {k: tuple(int(d) for d in s.shape) for k, s in space.spaces.items()}


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear + ReLU layers through ``sizes`` (input width first)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [layer_init(nn.Linear(a, b)), nn.ReLU()]
    return nn.Sequential(*layers)


class CarlActorCritic(nn.Module):
    """Actor-critic over a Dict observation: ``bev`` [C, H, W] (optional), flat 1-D inputs, and
    (critic only) ``value_inputs``.

    :meth:`forward` is the one training call (DistributedDataParallel only wraps ``forward``): given
    the Beta sample ``x`` in [0, 1] it returns its log-probability, the entropy and the value; without
    ``x`` it draws one.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], action_dim: int = 2, cfg: NetConfig = NetConfig(),
                 cost_head: bool = False):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.shapes = dict(shapes)
        self.flat_keys = tuple(k for k, s in shapes.items() if len(s) == 1 and k != VALUE_ONLY)
        n_value_inputs = shapes[VALUE_ONLY][0] if VALUE_ONLY in shapes else 0
        n_flat = sum(shapes[k][0] for k in self.flat_keys)
        self.bev = None
        bev_out = 0
        if "bev" in shapes:
            c, h, w = shapes["bev"]
            if h != w:
                raise ValueError(f"the BEV must be square, got {h} x {w}.")
            self.bev = BevEncoder(c, h, cfg)
            bev_out = cfg.bev_features
            widths = (n_flat, cfg.measurement_features, cfg.measurement_features)
        else:
            widths = (n_flat, *cfg.vector_layers)
        self.flat = mlp(widths)
        self.joint = nn.Sequential(layer_init(nn.Linear(bev_out + widths[-1], cfg.hidden)), nn.ReLU())
        # Small last-layer gains: a near-uniform Beta and a near-zero value at the start (CleanRL).
        self.policy_head = layer_init(nn.Linear(cfg.hidden, 2 * action_dim), std=0.01)
        self.value_head = nn.Sequential(layer_init(nn.Linear(cfg.hidden + n_value_inputs, cfg.value_hidden)), nn.ReLU(),
                                        layer_init(nn.Linear(cfg.value_hidden, 1), std=1.0))
        # PPO-Lag: a second critic for the discounted infraction cost, on the same inputs.
        self.cost_head = (nn.Sequential(layer_init(nn.Linear(cfg.hidden + n_value_inputs, cfg.value_hidden)),
                                        nn.ReLU(), layer_init(nn.Linear(cfg.value_hidden, 1), std=1.0))
                          if cost_head else None)

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Joint features of the actor and the critic."""
        flat = obs[self.flat_keys[0]] if len(self.flat_keys) == 1 else torch.cat([obs[k] for k in self.flat_keys], -1)
        h = self.flat(flat)
        if self.bev is not None:
            h = torch.cat([self.bev(obs["bev"]), h], dim=-1)
        return self.joint(h)

    def value_from(self, feat: torch.Tensor, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B] values, or [B, 2] (value, cost value) with a cost head."""
        inp = torch.cat([feat, obs[VALUE_ONLY]], dim=-1) if VALUE_ONLY in self.shapes else feat
        if self.cost_head is None:
            return self.value_head(inp).squeeze(-1)
        return torch.cat([self.value_head(inp), self.cost_head(inp)], dim=-1)

    def distribution(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α, β) of the Beta policy, each [B, action_dim]."""
        return beta_params(self.policy_head(feat))

    def forward(self, obs: dict[str, torch.Tensor], x: torch.Tensor | None = None, critic_head_only: bool = False,
                guide: torch.Tensor | None = None):
        """(x, log_prob [B], entropy [B], value [B] or [B, 2] with a cost head); ``x`` is drawn from the
        policy when None. ``critic_head_only`` keeps the value's gradient out of the shared layers (a
        critic trained under a fixed policy). With ``guide`` (other Beta samples [B, action_dim], e.g. a
        teacher's actions) a fifth element: their log-probability per action dimension [B, action_dim] under
        the same policy (the imitation weighs the dimensions, ``WarmStartConfig.action_weights``)."""
        feat = self.features(obs)
        alpha, beta = self.distribution(feat)
        if x is None:
            x = sample_beta(alpha, beta)
        logp = beta_log_prob(x, alpha, beta).sum(-1)
        ent = beta_entropy(alpha, beta).sum(-1)
        value = self.value_from(feat.detach() if critic_head_only else feat, obs)
        if guide is None:
            return x, logp, ent, value
        return x, logp, ent, value, beta_log_prob(guide, alpha, beta)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], deterministic: bool = True) -> torch.Tensor:
        """Actions in [-1, 1] [B, action_dim]: the Beta mean when ``deterministic``, else a sample."""
        alpha, beta = self.distribution(self.features(obs))
        x = beta_mean(alpha, beta) if deterministic else sample_beta(alpha, beta)
        return 2.0 * x - 1.0


def sample_beta(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Beta(α, β) samples as Ga(α) / (Ga(α) + Ga(β)) from torch's global generator (seeded by the trainer)."""
    ga, gb = torch._standard_gamma(alpha), torch._standard_gamma(beta)
    return (ga / (ga + gb)).clamp(BETA_EPS, 1.0 - BETA_EPS)
