import numpy as np
import pytest
import torch

import steer.sim  # noqa: F401
from steer.agent.dsrl import DSRLConfig, train_dsrl
from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig
from steer.agent.dsrl.na import ChunkReplay, GaussianLatentActor, prefill_from_demos
from steer.agent.runlog import MemoryLog
from steer.sim.demos import load_demos


def test_demo_prefill_sums_rewards_per_chunk(tiny_bc, tiny_demos):
    policy, _ = tiny_bc
    demos = load_demos(tiny_demos)
    buf = ChunkReplay(10_000, 10, 8)
    n = prefill_from_demos(buf, policy, demos, reward_offset=1.0)
    expected = sum(-(-len(a) // 4) for a in demos.actions)  # ceil(T / chunk) chunks per episode
    assert n == expected == buf.size
    rew, done = buf.data["rew"][:n], buf.data["done"][:n]
    assert done.sum() == demos.successes.sum()  # one terminal chunk per successful demo
    # A full chunk without success costs -4; the successful last chunk earns +1 on its final step.
    assert set(np.round(rew[done == 0], 3)) <= {-4.0, -3.0, -2.0, -1.0}
    assert np.all(rew[done == 1] >= -3.0) and np.all(rew[done == 1] <= 0.0)
    assert np.all(np.abs(buf.data["act"][:n]) <= 1.0 + 1e-5)


def test_na_trains_from_prefilled_demos_and_returns_a_bounded_actor(tiny_bc, tiny_demos, tmp_path):
    policy, _ = tiny_bc
    log = MemoryLog(tmp_path)
    cfg = DSRLConfig(algorithm="na", env_steps=500, warmup_env_steps=100, utd=1, na_utd=1, na_distill_steps=1,
                     batch_size=64, eval_every=10**6, na_prefill_demos=str(tiny_demos))
    fn, details = train_dsrl(policy, "steer/PlanarPush-v0", cfg, log, progress=False)
    assert details["progress"].env_steps >= 500
    assert log.series("charts/prefilled_transitions")[0][1] > 100
    q = [v for _, v in log.series("losses/q")]
    qw = [v for _, v in log.series("losses/q_w")]
    assert q and qw and np.all(np.isfinite(q)) and np.all(np.isfinite(qw))
    actor = details["actor"]
    assert isinstance(actor, LatentActor)
    # The returned chunk policy decodes the actor's latent for the normalized observation.
    obs = np.random.default_rng(0).uniform(-0.2, 0.2, (3, 10)).astype(np.float32)
    with torch.no_grad():
        o = torch.from_numpy(obs)
        expected = policy.sample(o, actor(policy.obs_norm.normalize(o)).reshape(3, 4, 2)).numpy()
    np.testing.assert_allclose(fn(obs), expected, atol=1e-6)


def test_gaussian_latent_actor_log_prob_is_the_tanh_squashed_normal():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    torch.manual_seed(0)
    actor = GaussianLatentActor(LatentActorConfig(6, 4, 16, 2, True, 1.5))
    obs = torch.randn(256, 6)
    w, logp = actor.sample(obs)
    h = actor.latent_pi(obs)
    dist = TransformedDistribution(Normal(actor.mu(h), actor.log_std(h).clamp(-20, 2).exp()), [TanhTransform()])
    y = (w / 1.5).clamp(-1 + 1e-6, 1 - 1e-6)
    ref = dist.log_prob(y).sum(-1)
    keep = y.abs().amax(-1) < 0.99  # away from the edges, where the 1e-6 guard dominates
    assert keep.sum() > 100
    torch.testing.assert_close(logp[keep], ref[keep], atol=2e-3, rtol=1e-4)


def test_wall_clock_budget_stops_both_algorithms_early_with_a_checkpoint(tiny_bc, tmp_path):
    """``max_minutes`` ends training long before ``env_steps`` (100k here), and the run leaves a
    checkpoint that ``--resume`` would continue from."""
    import time

    from steer.agent.checkpoint import load_checkpoint

    policy, _ = tiny_bc
    for algo in ("na", "sac"):
        log = MemoryLog(tmp_path / algo)
        cfg = DSRLConfig(algorithm=algo, env_steps=100_000, warmup_env_steps=50, utd=1, na_utd=1,
                         na_distill_steps=1, batch_size=32, eval_every=10**6, checkpoint_every=10**6,
                         max_minutes=0.05)
        t0 = time.time()
        _, details = train_dsrl(policy, "steer/PlanarPush-v0", cfg, log, progress=False)
        took = time.time() - t0
        steps = details["progress"].env_steps
        assert 0 < steps < 100_000 and 3.0 <= took < 30.0, (algo, steps, took)
        _, meta = load_checkpoint(log.checkpoint_dir, "dsrl_trainer")
        assert int(meta["env_steps"]) == steps


def test_both_algorithms_start_their_entropy_coefficient_at_init_alpha(tiny_bc):
    """``init_alpha`` is where the tuned α starts (1 by default, as SB3 and the official code), in both learners."""
    from steer.agent.dsrl.na import NaLearner
    from steer.agent.dsrl.sac import build_sac, make_latent_vec_env

    policy, _ = tiny_bc
    for init in (1.0, 0.02):
        cfg = DSRLConfig(init_alpha=init, batch_size=16, num_envs=1)
        na = NaLearner(policy, cfg, np.random.default_rng(0))
        sac = build_sac(policy, make_latent_vec_env("steer/PlanarPush-v0", policy, cfg), cfg)
        assert float(na.log_alpha.exp()) == pytest.approx(init, rel=1e-6)
        assert float(sac.log_ent_coef.exp()) == pytest.approx(init, rel=1e-6)
        # NA tunes it: each update moves log α by about lr (Adam), toward the target entropy.
        for _ in range(40):
            na.buf.add(obs=np.zeros(10, np.float32), next_obs=np.zeros(10, np.float32), act=np.zeros(8, np.float32),
                       rew=-4.0, done=0.0)
        for _ in range(5):
            na.update()
        assert 0 < abs(float(na.log_alpha) - np.log(init)) < 6 * 3e-4


def test_learning_curve_points_are_at_least_half_an_interval_apart(tiny_bc, tmp_path):
    """The first evaluation lands where warm-up ended (here 8 env steps before a multiple of eval_every);
    the next one skips that multiple instead of evaluating nearly the same actor again."""
    policy, _ = tiny_bc
    for algo in ("na", "sac"):
        cfg = DSRLConfig(algorithm=algo, env_steps=420, warmup_env_steps=190, utd=1, na_utd=1, na_distill_steps=1,
                         batch_size=16, eval_every=100, eval_episodes=2, checkpoint_every=10**6)
        _, details = train_dsrl(policy, "steer/PlanarPush-v0", cfg, MemoryLog(tmp_path / algo), progress=False)
        steps = [c[0] for c in details["progress"].curve]
        assert len(steps) >= 2 and steps[0] < 200, (algo, steps)
        assert min(np.diff(steps)) >= 50, (algo, steps)


def _chain_value_after(tau: float, updates: int = 1500) -> tuple[float, float]:
    """Q_A at the start of a 9-chunk chain (-4 per chunk, terminal at the end) after ``updates`` TD steps of the
    learner's own ``q_a_step`` with target step ``tau``; and the chain's true discounted value."""
    from steer.agent.bc import base_latents
    from steer.agent.diffusion import DiffusionConfig, DiffusionPolicy
    from steer.agent.dsrl.na import NaLearner

    torch.manual_seed(0)
    policy = DiffusionPolicy(DiffusionConfig(obs_dim=10, action_dim=2, chunk_len=4, hidden_dim=32, num_blocks=1),
                             -torch.ones(10), torch.ones(10), -torch.ones(2), torch.ones(2)).eval()
    cfg = DSRLConfig(algorithm="na", hidden_dim=64, batch_size=64, tau=tau, gamma=0.99)
    rng = np.random.default_rng(0)
    na = NaLearner(policy, cfg, rng)
    n = 9
    states = np.eye(10, dtype=np.float32)[:n + 1]
    for k in range(n):
        na.buf.add(obs=states[k], next_obs=states[k + 1], act=np.zeros(8, np.float32),
                   rew=-4.0 if k < n - 1 else 0.0, done=float(k == n - 1))
    for _ in range(updates):
        na.q_a_step(na.buf.sample(rng, 64), torch.from_numpy(base_latents(policy, rng, 64)), 0.0)
        na.sync_target()
    with torch.no_grad():
        q0 = float(na.q_a.min(torch.from_numpy(states[:1]), torch.zeros(1, 8)))
    return q0, -4.0 * (1 - 0.99 ** (n - 1)) / 0.01


def test_a_faster_target_carries_the_value_back_further_in_the_same_updates():
    """Why Can's preset moves the target faster: the value of a chunk many steps before the end arrives
    one target lag (~1/tau updates) per chunk. Measured: tau 0.1 gives -31.6 of the true -30.9 after 1,500
    updates, tau 0.005 only -20.1."""
    torch.set_num_threads(1)
    fast, true = _chain_value_after(0.1)
    slow, _ = _chain_value_after(0.005)
    assert abs(fast - true) < 0.15 * abs(true), (fast, true)
    assert abs(slow) < 0.75 * abs(true), (slow, true)
    assert fast < slow - 5.0
