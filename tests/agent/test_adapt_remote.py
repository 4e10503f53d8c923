"""RobotDSRL, the robot learner's chunk loop, driven without a transport by a PlanarPush env playing the
robot and its steered node (chunk 0 is a one-step lead-in holding still; later chunks run the learner's
latent, chosen on the step before each starts)."""

import dataclasses

import numpy as np
import pytest
import torch

from steer.agent.conservative import ConservativeConfig
from steer.agent.dsrl import DSRLConfig
from steer.agent.dsrl.remote import RobotDSRL
from steer.agent.runlog import MemoryLog
from steer.robot.spec import STEERED_LEAD_IN_STEPS, steered_chunk_start

MAX_STEPS = 24  # six chunks of four


def _cfg(**kw):
    base = DSRLConfig(num_envs=1, warmup_env_steps=48, utd=2, batch_size=16, hidden_dim=32, num_layers=2,
                      buffer_size=2_000, checkpoint_every=10_000, env_steps=10_000,
                      conservative=ConservativeConfig(variant="epsmix", min_baseline_episodes=3))
    return dataclasses.replace(base, **kw)


def _chunks(steps: int) -> int:
    """Chunks a steered episode of ``steps`` steps ran: the lead-in, then chunks of four."""
    return 1 + -(-(steps - STEERED_LEAD_IN_STEPS) // 4)


def _episode(learner, env, policy, seed, lose_executed=(), with_obs=True, ran_on=None):
    """One episode: the env is the robot, the loop body is what the steered node does per tick (chunk 0 is
    the lead-in, STEERED_LEAD_IN_STEPS ticks holding still, then chunks of four)."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    learner.start_episode(str(seed))
    latents, chunk, i, t, k, success = {}, None, 0, 0, -1, False
    ran_on = {} if ran_on is None else ran_on
    while True:
        decision = learner.observe(obs)  # the learner sees the step's observation as the node does
        if decision is not None:
            latents[decision[0]] = decision[1]
        if chunk is None or i == len(chunk):
            k += 1
            assert t == steered_chunk_start(k, 4)
            if k == 0:  # the lead-in: the node holds still (zero velocity) and queries nothing
                chunk, i = np.zeros((STEERED_LEAD_IN_STEPS, 2), np.float32), 0
            else:
                w = latents.get(k)
                source = "learner" if w is not None else "baseline"
                w = w if w is not None else np.clip(rng.standard_normal(8), -1.5, 1.5).astype(np.float32)
                if k not in lose_executed:
                    learner.executed(str(seed), k, w, source, obs if with_obs else None)
                    ran_on[k] = obs
                with torch.no_grad():
                    chunk = policy.sample(torch.as_tensor(obs, dtype=torch.float32)[None],
                                          torch.as_tensor(w).reshape(1, 4, 2))[0].numpy()
                i = 0
        obs, _, term, trunc, info = env.step(chunk[i])
        i, t = i + 1, t + 1
        if term or trunc:
            success = bool(info["is_success"])
            break
    return learner.end_episode(t, success), latents


@pytest.fixture
def env():
    import gymnasium as gym

    import steer.sim  # noqa: F401

    return gym.make("steer/PlanarPush-v0", max_steps=MAX_STEPS)


def test_each_episode_stores_its_chunks_after_the_first_and_the_gate_measures_the_baseline_first(tiny_bc, env):
    policy, _ = tiny_bc
    learner = RobotDSRL(policy, _cfg(), MemoryLog())
    plans = []
    for i in range(5):
        outcome, latents = _episode(learner, env, policy, 100 + i)
        plans.append(outcome.plan)
        n_chunks = _chunks(outcome.steps)
        assert outcome.transitions == n_chunks - 1  # chunk 0, the lead-in, ran before the learner could choose
        # Chunk k is chosen on the step before it starts: one more when the episode ended on a chunk's end.
        ended_on_boundary = (outcome.steps - STEERED_LEAD_IN_STEPS) % 4 == 0
        assert sorted(latents) == list(range(1, n_chunks + ended_on_boundary))
        assert outcome.learner_chunks == n_chunks - 1
    # The first three episodes measure the baseline on the robot; L_b then exists.
    assert plans[:3] == ["baseline"] * 3
    assert learner.gate.gated.gate.baseline_values[:3] == [float(o.success) for o in learner.outcomes[:3]]
    assert learner.progress.episodes == 5 and learner.progress.env_steps == sum(o.steps for o in learner.outcomes)
    # Past the warm-up (48 env steps) every stored chunk owes utd updates; they run one call at a time.
    assert learner.owed_updates > 0
    before = learner.learner.model._n_updates
    assert learner.update(3) == 3 and learner.learner.model._n_updates == before + 3


def test_a_discarded_episode_changes_nothing_learned_and_a_missing_executed_chunk_is_not_stored(tiny_bc, env):
    policy, _ = tiny_bc
    learner = RobotDSRL(policy, _cfg(), MemoryLog())
    _episode(learner, env, policy, 1)
    steps, stored = learner.progress.env_steps, learner.learner.latent_steps
    learner.start_episode("2")
    obs, _ = env.reset(seed=2)
    for _ in range(5):
        learner.observe(obs)
    learner.discard_episode()  # e.g. the node died mid-episode
    assert (learner.progress.env_steps, learner.learner.latent_steps, learner.discarded) == (steps, stored, 1)
    assert learner.end_episode(20, True) is None  # nothing in flight any more
    outcome, _ = _episode(learner, env, policy, 3, lose_executed={2})
    assert outcome.transitions == _chunks(outcome.steps) - 2


def test_the_operator_mark_overrides_the_success_topic_and_no_outcome_discards(tiny_bc, env):
    policy, _ = tiny_bc
    learner = RobotDSRL(policy, _cfg(), MemoryLog())
    obs, _ = env.reset(seed=5)
    learner.start_episode("5")
    for _ in range(8):
        learner.observe(obs)
    learner.mark(True)
    assert learner.end_episode(8, False).success is True
    learner.start_episode("6")
    learner.observe(obs)
    assert learner.end_episode(1, None) is None and learner.discarded == 1
    # A learned success detector judges what neither the robot nor the operator did.
    judged = RobotDSRL(policy, _cfg(), MemoryLog(), success_detector=lambda observations: len(observations) > 3)
    judged.start_episode("7")
    for _ in range(8):
        judged.observe(obs)
    assert judged.end_episode(8, None).success is True


def test_resume_restores_learner_gate_and_counters(tiny_bc, env, tmp_path):
    policy, _ = tiny_bc
    learner = RobotDSRL(policy, _cfg(), MemoryLog(tmp_path))
    for i in range(4):
        _episode(learner, env, policy, 200 + i)
    learner.update(5)
    learner.checkpoint()
    back = RobotDSRL(policy, _cfg(), MemoryLog(tmp_path), resume=True)
    assert back.progress.env_steps == learner.progress.env_steps and back.progress.episodes == 4
    assert back.learner.latent_steps == learner.learner.latent_steps
    assert back.gate.gated.gate.baseline_values == learner.gate.gated.gate.baseline_values
    o = np.zeros(10, np.float32)
    assert np.allclose(back.learner.act(o, True), learner.learner.act(o, True))


def test_dsrl_na_learns_from_the_robots_chunks_too(tiny_bc, env, tmp_path):
    policy, _ = tiny_bc
    learner = RobotDSRL(policy, _cfg(algorithm="na", na_distill_steps=1), MemoryLog(tmp_path))
    for i in range(4):
        _episode(learner, env, policy, 300 + i)
    na = learner.learner
    assert na.latent_steps == sum(o.transitions for o in learner.outcomes) == na.na.buf.size
    # What Q_A learns on: the chunk the frozen policy decodes from the stored observation and latent.
    assert np.abs(na.na.buf.data["act"][: na.na.buf.size]).max() <= 1.0 + 1e-6
    assert learner.update(2) == 2 and na.updates == 2
    learner.checkpoint()
    back = RobotDSRL(policy, _cfg(algorithm="na", na_distill_steps=1), MemoryLog(tmp_path), resume=True)
    assert back.learner.latent_steps == na.latent_steps and back.learner.updates == 2


def test_the_learner_stores_the_observation_each_chunk_ran_on_not_the_one_it_chose_from(tiny_bc, env):
    """A latent is chosen on the step before its chunk starts (the node never waits), but the transition
    stored is the one that happened: the observation the node ran the chunk on, as the node reports it."""
    policy, _ = tiny_bc
    learner = RobotDSRL(policy, _cfg(), MemoryLog())
    ran_on = {}
    outcome, _ = _episode(learner, env, policy, 400, ran_on=ran_on)
    rb = learner.learner.model.replay_buffer
    stored = rb.observations[: outcome.transitions, 0]
    expected = np.stack([learner.normalize(ran_on[k]) for k in range(1, outcome.transitions + 1)])
    assert np.allclose(stored, expected)
    assert np.allclose(rb.next_observations[: outcome.transitions - 1, 0], expected[1:])
    # The same episode on a node that reports no observations: the decisions' observations (one step of
    # motion earlier) stand in.
    chosen = RobotDSRL(policy, _cfg(), MemoryLog())
    outcome2, _ = _episode(chosen, env, policy, 400, with_obs=False)
    stored2 = chosen.learner.model.replay_buffer.observations[: outcome2.transitions, 0]
    assert outcome2.transitions == outcome.transitions
    assert np.abs(stored2 - expected).max() > 1e-3
