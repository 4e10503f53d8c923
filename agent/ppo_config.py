"""Configuration of the CaRL PPO trainer (no torch import: the CLI reads it for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from steer.driving.env import DriveEnvConfig
from steer.driving.rewards import CarlRewardConfig


@dataclass(frozen=True)
class NetConfig:
    """Sizes of the actor-critic (CaRL's network scaled down for a CPU, or an MLP over the vector observation)."""

    cnn_channels: tuple[int, ...] = field(default=(16, 32, 32), metadata={"range": "[1, inf)"})
    """Output channels of the BEV convolutions; the first has a 4x4 kernel with stride 4, the rest 3x3
    with stride 2 (CaRL: a deeper ResNet-style stack over 256 x 256)."""
    bev_features: int = field(default=256, metadata={"range": "[1, inf)"})
    """Width of the linear layer after the convolutions."""
    measurement_features: int = field(default=64, metadata={"range": "[1, inf)"})
    """Width of the measurement MLP (beside the BEV encoder)."""
    vector_layers: tuple[int, ...] = (256,)
    """Widths of the MLP over the flat inputs when there is no BEV (the vector observation); the joint
    layer of width ``hidden`` follows it."""
    hidden: int = field(default=256, metadata={"range": "[1, inf)"})
    """Width of the joint layer shared by the policy and value heads."""
    value_hidden: int = field(default=128, metadata={"range": "[1, inf)"})
    """Width of the value head's hidden layer (it also takes the value-only inputs)."""


COST_INFRACTIONS = ("collision_vehicle", "collision_static", "collision_pedestrian", "red_light", "stop_sign",
                    "off_road", "route_deviation")
"""Infractions that cost 1 each under PPO-Lag (being blocked or running out of time costs nothing)."""


@dataclass(frozen=True)
class LagrangianConfig:
    """PPO-Lag: a cost critic and a Lagrange multiplier on infractions (Ray et al. 2019, as in Safety Gym).

    Infractions stay terminal (and CaRL's reward still ends or scales down); the Lagrangian adds a
    constraint on the expected infractions per episode: the policy ascends (A_r − λ·A_c) / (1 + λ), and
    after each rollout λ ← max(0, λ + lambda_lr · (J_c − cost_limit)), J_c being the mean cost of the
    episodes that ended in it (all ranks).
    """

    enabled: bool = False
    """Train a cost critic and penalize the policy with λ."""
    cost_limit: float = 0.1
    """Allowed infractions per episode (with terminal infractions: the share of episodes that may end in one)."""
    lambda_lr: float = 0.05
    """Step size of the multiplier's (projected) gradient ascent."""
    lambda_init: float = 0.0
    """λ at the start of the run."""
    cost_gamma: float = field(default=0.99, metadata={"range": "[0, 1]"})
    """Discount of the cost returns."""
    cost_infractions: tuple[str, ...] = COST_INFRACTIONS
    """Infraction flags that each cost 1 on the step they happen."""


@dataclass(frozen=True)
class WarmStartConfig:
    """Imitation of the env's scripted driver before PPO, by DAgger (Ross et al. 2011): round 0 drives
    with the driver's actions, later rounds with the policy's mean actions, every visited observation
    is labelled with the driver's action (``infos["expert_action"]`` after ``reset(options={
    "expert_labels": True})``), and the actor fits the growing set by Beta log-likelihood. Its env steps
    and time count in the run's. Then the first ``value_updates`` PPO updates train the critic alone,
    so that the policy is not moved by the advantages of an untrained critic."""

    rounds: int = field(default=0, metadata={"range": "[0, inf)"})
    """DAgger rounds (0: no warm start, PPO from scratch)."""
    steps: int = field(default=64, metadata={"range": "[1, inf)"})
    """Env steps per env in each round."""
    epochs: int = field(default=4, metadata={"range": "[1, inf)"})
    """Passes over the labelled set after each round."""
    max_samples: int = field(default=524_288, metadata={"range": "[1, inf)"})
    """Labelled samples kept, all ranks together (the oldest rounds are dropped first): a bound on the
    cost of a round's passes, which otherwise grows with every round."""
    max_memory_mb: float = field(default=2048.0, metadata={"range": "(0, inf)"})
    """Memory the labelled observations may hold, all ranks together, MiB (the oldest rounds are dropped
    first). A BEV sample is about a thousand times a vector one: at ``max_samples`` alone, 40 rounds of
    BEV observations outgrew a 24 GiB machine."""
    minibatch_size: int = field(default=2048, metadata={"range": "[1, inf)"})
    """Samples per gradient step, all ranks together."""
    learning_rate: float = field(default=1e-3, metadata={"range": "(0, inf)"})
    """Adam step size of the imitation."""
    focus_weight: float = 0.0
    """Extra weight of the samples where the driver reacts to something on its route (``infos[
    "expert_focus"]``: passing a parked car, braking for a vehicle or a pedestrian): each weighs 1 +
    ``focus_weight`` in the imitation, in the warm start and in ``ppo_coef``'s term (each loss is a
    weighted mean over its samples). They are a few percent of the
    samples, and the held-out routes end in exactly those states: on the usual held-out world the
    warm-started policy held its line past road works where the driver shifted 0.7 m to the left."""
    final_lr_fraction: float = field(default=1.0, metadata={"range": "(0, 1]"})
    """The imitation's step size falls linearly over the rounds, from ``learning_rate`` in the first
    to this fraction of it in the last (1: constant). The policy that PPO starts from is the last
    round's weights, and a constant step leaves them as noisy as the last minibatches. Measured once
    (seed 0, one process, 3 held-out worlds): 0.807 / 0.848 / 0.894 with 0.1 against 0.803 / 0.903 /
    0.907 constant, so the default stays 1."""
    head_l2: float = field(default=1e-3, metadata={"range": "[0, inf)"})
    """Weight of the squared raw outputs of the policy head in the imitation loss. The driver's hard
    braking (-1) is a label at the Beta's edge, where the likelihood keeps pushing α (= 1 + softplus)
    toward 1, its raw output toward -inf and softplus's gradient toward 0: one seed of three collapsed
    that way, α = 1.0 everywhere, a car that never drove off. The penalty keeps the output finite and its
    gradient alive."""
    action_weights: tuple[float, float] = field(default=(1.0, 1.0), metadata={"range": "[0, inf)"})
    """Weights of the steering and acceleration log-likelihoods in the imitation (warm start and
    ``ppo_coef``). A small steering error compounds (a car that drifts off its line, clips a parked car)
    where the same error in acceleration does not."""
    value_updates: int = field(default=5, metadata={"range": "[0, inf)"})
    """First PPO updates that train the critic only."""
    ppo_coef: float = field(default=0.0, metadata={"range": "[0, inf)"})
    """Weight of the same imitation during PPO (DAPG's idea, Rajeswaran et al. 2018, with DAgger's
    labels): the rollouts are labelled with the driver's actions for the states the policy visits, and
    each minibatch adds ``ppo_coef`` x the Beta negative log-likelihood of those actions to the PPO
    loss. 0: PPO alone after the warm start (the advantages may then walk the policy away from what
    the driver showed, e.g. through red lights, faster than the reward teaches it back)."""
    ppo_decay_steps: int = field(default=0, metadata={"range": "[0, inf)"})
    """Env steps over which ``ppo_coef`` falls linearly to 0 (0: it stays)."""


@dataclass(frozen=True)
class PPOConfig:
    """PPO as CaRL configures it, with the sample counts, network and aids sized for a 2-core CPU and the
    vector observation.

    CaRL's 300M-sample run: 128 envs, rollout 512, minibatch 16,384, 3 epochs, lr 2.5e-4 with linear
    decay, gamma 0.99, lambda 0.95, clip 0.1, entropy 0.01, value 0.5, value clipping, grad norm 0.5.
    Here, measured on 100 held-out routes (see the README): 512 envs x 32 steps (a cheaper env step
    per sample than 256), minibatch 1,024 (48 gradient steps per rollout instead of 12), lr 2e-4,
    gamma 0.995, entropy 0.001 and no value clipping, rewards scaled by the running return std, a
    128-wide MLP (a third of the update's cost), a DAgger warm start from the scripted driver whose
    labels stay on as an imitation term during PPO, and
    training episodes of which half start before a stop line (``env.light_start``) with a red-light
    factor in the reward (``env.carl.light_brake``). From scratch PPO plateaued at 0.35 route
    completion within 1M env steps whatever the settings: it never learned to stop for red lights.
    Counts here are global: under ``torchrun`` each rank runs ``num_envs / world`` envs and trains on
    ``minibatch_size / world`` samples of each minibatch.
    """

    seed: int = 0
    """Seed of the networks, the sampling and the episodes (rank r adds r)."""
    total_timesteps: int = field(default=40_000_000, metadata={"range": "[1, inf)"})
    """Environment steps to train for, all ranks together (the learning rate decays over them; `steer
    drive train` stops at its time limit first)."""
    num_envs: int = field(default=512, metadata={"range": "[1, inf)"})
    """Parallel driving episodes, all ranks together (CaRL: 128 per GPU)."""
    num_steps: int = field(default=32, metadata={"range": "[1, inf)"})
    """Steps per env in one rollout (CaRL: 512)."""
    minibatch_size: int = field(default=1024, metadata={"range": "[1, inf)"})
    """Samples per gradient step, all ranks together (CaRL: 16,384)."""
    update_epochs: int = field(default=3, metadata={"range": "[1, inf)"})
    """Passes over each rollout."""
    learning_rate: float = field(default=2e-4, metadata={"range": "(0, inf)"})
    """Adam step size at the start (CaRL: 2.5e-4)."""
    anneal_lr: bool = True
    """Decay the step size linearly to 0 over the run."""
    gamma: float = field(default=0.995, metadata={"range": "[0, 1]"})
    """Discount (CaRL: 0.99)."""
    gae_lambda: float = field(default=0.95, metadata={"range": "[0, 1]"})
    """GAE lambda."""
    clip_coef: float = field(default=0.1, metadata={"range": "(0, inf)"})
    """PPO ratio clip."""
    clip_vloss: bool = False
    """Clip the value update around the rollout's values with ``clip_coef``."""
    norm_adv: bool = True
    """Normalize advantages per minibatch (over all ranks)."""
    norm_reward: bool = True
    """Divide rewards by a running standard deviation of the discounted return (gymnasium's
    NormalizeReward, per rank): the value targets stay near unit scale whatever the route length, so
    the value loss's gradient no longer fills the shared trunk's gradient-norm clip and shrinks the
    policy's steps (with raw progress percent the norm reached ~6 against the clip of 0.5)."""
    ent_coef: float = 0.001
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = field(default=0.5, metadata={"range": "(0, inf)"})
    """Global gradient-norm clip."""
    adam_eps: float = field(default=1e-5, metadata={"range": "(0, inf)"})
    """Adam epsilon (CleanRL's value)."""
    checkpoint_every: int = field(default=10, metadata={"range": "[1, inf)"})
    """Write the ``last`` checkpoint every this many updates (and at the end)."""
    torch_threads: int = 1
    """CPU threads for torch per rank; 0 leaves torch's default. One thread avoids the stalls of
    multi-threaded kernels when the cores are shared with the simulator or other processes."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    net: NetConfig = field(default_factory=lambda: NetConfig(vector_layers=(128,), hidden=128, value_hidden=64))
    """Network sizes."""
    env_id: str = "steer/Drive-v0"
    """Gymnasium id of the env; the trainer makes it with ``gym.make_vec(env_id, num_envs,
    vectorization_mode="vector_entry_point", config=env)``."""
    env: DriveEnvConfig = field(default_factory=lambda: DriveEnvConfig(light_start=0.5,
                                                                      carl=CarlRewardConfig(light_brake=3.0)))
    """Driving envs (reward, observation, towns, traffic)."""
    lagrangian: LagrangianConfig = field(default_factory=LagrangianConfig)
    """Optional PPO-Lag cost on infractions."""
    warm_start: WarmStartConfig = field(default_factory=lambda: WarmStartConfig(rounds=40, steps=32, ppo_coef=2.0,
                                                                                action_weights=(4.0, 1.0),
                                                                                focus_weight=12.0))
    """Imitation of the env's scripted driver before PPO (40 DAgger rounds, about 5 minutes of one core)
    and during it (``ppo_coef``). On the world with pedestrians, stop signs and obstacles, 11-minute
    runs on one core each, 100 held-out routes: PPO after 8 rounds fell from 0.67 route completion
    (after the warm start) to 0.40, with red lights back; with the imitation term it stayed at
    0.70-0.73 (weights 0.5 and 2.0). Steering weighted 4x acceleration: 0.790-0.803 held-out route
    completion at the end of the warm start against 0.766-0.773 unweighted (3 seeds each). The samples
    where the driver passes a parked car or brakes for a road user weigh 13x (``focus_weight`` 12): at
    the end of the warm start (one process, seed 0), held-out route completion 0.882 / 0.942 / 0.955 on
    three worlds against 0.803 / 0.903 / 0.907 unweighted (0.850 / 0.933 / 0.948 with 4, 0.859 / 0.917 /
    0.946 with 30; seed 1 with 12: 0.906 / 0.963 / 0.948)."""

    @property
    def batch_size(self) -> int:
        """Samples per rollout, all ranks together."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Rollout-and-train iterations of the run."""
        return max(1, self.total_timesteps // self.batch_size)
