"""The conservative gate inside DSRL training (SAC and NA) and the shield's metrics."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import steer.sim  # noqa: F401
from steer.agent.conservative import ConservativeConfig
from steer.agent.dsrl import DSRLConfig, train_dsrl
from steer.agent.runlog import MemoryLog

TASK = "steer/PlanarPush-v0"


def _cfg(algorithm, **gate):
    return DSRLConfig(algorithm=algorithm, env_steps=400, warmup_env_steps=200, utd=1, num_envs=2, batch_size=32,
                      hidden_dim=32, num_layers=1, na_utd=1, na_distill_steps=1, eval_every=10**6, seed=0,
                      conservative=ConservativeConfig(**{"metrics_window": 2, "min_baseline_episodes": 1, **gate}))


def _bc_run(tiny_bc, tmp_path):
    """A BC run directory at tmp_path/bc whose checkpoints are the tiny BC policy's."""
    (tmp_path / "bc").mkdir()
    (tmp_path / "bc" / "checkpoints").symlink_to(tiny_bc[1], target_is_directory=True)


def test_sac_gate_with_no_slack_never_lets_the_actor_act(tiny_bc):
    # α = 0 and an explorer that never ran: ρ = 0, so every chunk must be the base policy's N(0, I) noise,
    # drawn from the warm-up generator in order: the replay buffer must hold exactly that sequence.
    policy, _ = tiny_bc
    torch.set_num_threads(1)
    log = MemoryLog()
    _, det = train_dsrl(policy, TASK, _cfg("sac", variant="epsmix", alpha=0.0), log, progress=False)
    gated, model = det["gate"], det["model"]
    assert gated.records and all(r.kind == "baseline" and r.explorer_share == 0.0 for r in gated.records)
    rb = model.replay_buffer
    n = rb.buffer_size if rb.full else rb.pos
    expected = np.clip(np.random.default_rng(0).standard_normal((n, 2, policy.cfg.noise_dim)), -1.5, 1.5) / 1.5
    np.testing.assert_allclose(rb.actions[:n], expected, atol=1e-6)
    rhos = [v for _, v in log.series("safety/rho")]
    assert rhos and max(rhos) == 0.0
    assert all(0.0 <= v <= 1.0 for _, v in log.series("safety/below_threshold_frac"))


def test_sac_monitor_changes_nothing(tiny_bc):
    policy, _ = tiny_bc
    torch.set_num_threads(1)
    _, off = train_dsrl(policy, TASK, _cfg("sac"), MemoryLog(), progress=False)
    log = MemoryLog()
    _, mon = train_dsrl(policy, TASK, _cfg("sac", variant="monitor"), log, progress=False)
    assert off["gate"] is None and mon["gate"].records
    a, b = off["model"].replay_buffer, mon["model"].replay_buffer
    np.testing.assert_array_equal(a.actions[:a.pos], b.actions[:b.pos])
    assert log.series("safety/window_value")


def test_na_gate_with_no_slack_runs_only_the_baseline(tiny_bc):
    policy, _ = tiny_bc
    torch.set_num_threads(1)
    log = MemoryLog()
    _, det = train_dsrl(policy, TASK, _cfg("na", variant="stepmix", alpha=0.0), log, progress=False)
    assert det["gate"].records and all(r.kind == "baseline" for r in det["gate"].records)
    assert max(v for _, v in log.series("safety/rho")) == 0.0


def test_shield_wrapper_counts_interventions_and_they_reach_the_metrics(tiny_bc):
    from steer.ops.train_cmd import shielded_env_wrapper

    wrapper = shielded_env_wrapper()
    env = wrapper(gym.make(TASK))
    env.reset(seed=0)
    # 0.3 m/s is the velocity box; a command of 5 m/s is clipped, one of 0.01 passes untouched.
    _, _, _, _, info = env.step(np.array([5.0, 0.0], np.float32))
    assert info["safety/interventions"] == 1
    _, _, _, _, info = env.step(np.array([0.01, 0.0], np.float32))
    assert info["safety/interventions"] == 1 and info["safety/violations"] == 0
    policy, _ = tiny_bc
    torch.set_num_threads(1)
    log = MemoryLog()
    train_dsrl(policy, TASK, _cfg("sac", variant="epsmix"), log, progress=False, env_wrapper=wrapper)
    rates = [v for _, v in log.series("safety/shield_interventions_per_1k")]
    assert rates and all(0.0 <= v <= 1000.0 for v in rates)
    assert [v for _, v in log.series("safety/constraint_violations")]


def test_dsrl_command_with_gate_and_shield_writes_safety_metrics(tiny_bc, tmp_path):
    import json

    from steer.ops.train_cmd import DSRLCommand, run_dsrl

    _bc_run(tiny_bc, tmp_path)
    torch.set_num_threads(1)
    summary = run_dsrl(DSRLCommand(policy=tmp_path / "bc", runs=tmp_path, name="d", eval_episodes=0, shield=True,
                                   dsrl=_cfg("sac", variant="epsmix", alpha=0.0)), progress=False)
    assert summary["conservative"]["explorer_episodes"] == 0 and summary["conservative"]["rho_final"] == 0.0
    rows = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    safety = [r for r in rows if "safety/rho" in r]
    assert safety and all("safety/shield_interventions_per_1k" in r for r in safety)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert "epsmix" in json.dumps(config)


def test_gated_explorer_chunks_run_the_actor_mean_unless_asked_to_sample(tiny_bc):
    from dataclasses import replace

    from steer.agent.conservative import EpisodePlan

    policy, _ = tiny_bc
    torch.set_num_threads(1)
    _, det = train_dsrl(policy, TASK, _cfg("sac", variant="epsmix"), MemoryLog(), progress=False)
    model, gated = det["model"], det["gate"]
    model._last_obs = np.random.default_rng(1).standard_normal((2, policy.cfg.obs_dim)).astype(np.float32)
    mean, _ = model.predict(model._last_obs, deterministic=True)
    gated.plans = [EpisodePlan(1.0, "explorer"), EpisodePlan(0.0, "baseline")]
    actions, buffer_actions = model._sample_action(learning_starts=0, n_envs=2)
    np.testing.assert_allclose(actions[0], mean[0], atol=1e-5)
    np.testing.assert_allclose(buffer_actions[0], mean[0] / 1.5, atol=1e-5)
    assert np.abs(actions[1] - mean[1]).max() > 0.1  # the baseline env drew w ~ N(0, I)
    gated.cfg = replace(gated.cfg, explorer_deterministic=False)
    gated.plans = [EpisodePlan(1.0, "explorer"), EpisodePlan(1.0, "explorer")]
    sampled, _ = model._sample_action(learning_starts=0, n_envs=2)
    assert np.abs(sampled - mean).max() > 1e-3  # the stochastic policy's draw, not its mean


def test_safe_set_fallback_runs_the_baseline_latent_and_the_learner_stores_it(tiny_bc):
    from steer.agent.dsrl.latent_env import LatentNoiseEnv

    policy, _ = tiny_bc
    torch.set_num_threads(1)
    calls = []

    def first_chunk_unsafe(obs, chunk):
        calls.append(chunk.copy())
        return len(calls) > 1

    env = LatentNoiseEnv(gym.make(TASK), policy, 1.5, 1.0, safe_set=first_chunk_unsafe, fallback_seed=7)
    env.reset(seed=0)
    raw = env._raw_obs.copy()
    w = np.full(env.action_space.shape, 1.2, np.float32)
    _, _, _, _, info = env.step(w)
    expected = np.clip(np.random.default_rng(7).standard_normal(w.shape), -1.5, 1.5)
    np.testing.assert_allclose(info["executed_w"], expected, atol=1e-6)
    assert info["latent_fallback"] and info["safety/fallbacks"] == 1
    np.testing.assert_allclose(info["executed_actions"], env.decode(raw, info["executed_w"])[:info["chunk_steps"]],
                               atol=1e-6)
    # The rejected chunk is not the one that ran, and the fallback is not checked again.
    assert len(calls) == 1 and np.abs(calls[0][:info["chunk_steps"]] - info["executed_actions"]).max() > 1e-3
    _, _, _, _, info = env.step(w)
    assert not info["latent_fallback"] and info["safety/fallbacks"] == 1
    np.testing.assert_allclose(info["executed_w"], w)

    # In training, a set that rejects every chunk: the buffer holds the fallback latents, not the actor's.
    log = MemoryLog()
    _, det = train_dsrl(policy, TASK, _cfg("sac"), log, progress=False, safe_set=lambda o, c: False)
    rb = det["model"].replay_buffer
    n = rb.pos
    for i in range(2):
        ran = np.clip(np.random.default_rng(i).standard_normal((n, policy.cfg.noise_dim)), -1.5, 1.5) / 1.5
        np.testing.assert_allclose(rb.actions[:n, i], ran, atol=1e-6)
    assert det["progress"].fallbacks == det["progress"].chunks > 0
    assert [v for _, v in log.series("safety/fallback_frac")][-1] == 1.0


def test_dsrl_robot_run_turns_on_shield_safe_set_and_gate(tiny_bc, tmp_path):
    import json

    from steer.ops.train_cmd import DSRLCommand, run_dsrl

    _bc_run(tiny_bc, tmp_path)
    torch.set_num_threads(1)
    summary = run_dsrl(DSRLCommand(policy=tmp_path / "bc", runs=tmp_path, name="r", eval_episodes=0, robot=True,
                                   dsrl=_cfg("sac")), progress=False)
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert config["shield"] is True and config["safe_set"] is True
    assert config["dsrl"]["conservative"]["variant"] == "epsmix"
    assert summary["conservative"]["variant"] == "epsmix"
    assert summary["safe_set"]["chunks"] > 0 and 0 <= summary["safe_set"]["fallbacks"] <= summary["safe_set"]["chunks"]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("safety/shield_interventions_per_1k" in r for r in rows)
    # The run's plot gets its safety panel (a taller figure: 6.6 in instead of 4.2 at 120 dpi).
    import matplotlib.image

    png = matplotlib.image.imread(summary["report"])
    assert summary["report"] == str(tmp_path / "r" / "report.png") and png.shape[0] == round(6.6 * 120)
