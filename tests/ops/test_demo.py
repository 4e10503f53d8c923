"""The demo pipeline end to end at toy sizes: every stage runs and summary.json has the contract's fields."""

import json

import pytest

from steer.agent.bc import BCConfig
from steer.agent.dsrl import DSRLConfig
from steer.ops.demo import DemoConfig, run_demo
from steer.ops.run import RunError


@pytest.mark.slow
def test_demo_pipeline_writes_the_summary_contract(tmp_path):
    cfg = DemoConfig(out=tmp_path / "demo", demos=30, eval_episodes=6, robot_episodes=2,
                     bc=BCConfig(steps=150, checkpoint_every=150),
                     dsrl=DSRLConfig(env_steps=400, warmup_env_steps=200, utd=1, eval_every=200, eval_episodes=4))
    s = run_demo(cfg, progress=False)
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    assert s["task"] == "steer/PlanarPush-v0" and s["seed"] == 0 and s["wall_s"] > 0
    for part in ("bc", "dsrl"):
        assert s[part]["episodes"] == 6 and 0.0 <= s[part]["success_rate"] <= 1.0
    assert s["dsrl"]["env_steps"] >= 400 and s["dsrl"]["algorithm"] == "dsrl-sac"
    assert s["export"]["max_abs_diff"] <= 1e-5 and s["export"]["latency_ms_p50"] > 0
    assert s["robot_loop"]["episodes"] == 2 and s["robot_loop"]["latency_ms_p99"] > 0
    assert (tmp_path / "demo" / "report.png").stat().st_size > 10_000
    assert (tmp_path / "demo" / "policy.onnx").exists()
    # A finished demo is not overwritten; --resume reuses every finished stage.
    with pytest.raises(RunError, match="--resume"):
        run_demo(cfg, progress=False)
    bc_mtime = (tmp_path / "demo" / "bc" / "summary.json").stat().st_mtime
    again = run_demo(DemoConfig(**{**cfg.__dict__, "resume": True, "robot_episodes": 0}), progress=False)
    assert again["bc"] == s["bc"] and again["dsrl"] == s["dsrl"]
    assert (tmp_path / "demo" / "bc" / "summary.json").stat().st_mtime == bc_mtime


def test_demo_refuses_a_task_without_an_expert_before_creating_anything(tmp_path):
    with pytest.raises(RunError, match="no scripted expert"):
        run_demo(DemoConfig(task="steer/Unknown-v0", out=tmp_path / "demo"), progress=False)
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_demo_on_lift_uses_its_preset_and_exports_without_the_dds_loop(tmp_path):
    """`steer demo --task steer/Lift-v0` at toy sizes: robosuite demos, BC, DSRL with Lift's preset (DSRL-SAC),
    an ONNX file that matches torch, and no DDS loop (the simulated robot is PlanarPush's)."""
    cfg = DemoConfig(task="steer/Lift-v0", out=tmp_path / "demo", demos=2, eval_episodes=1,
                     bc=BCConfig(steps=20, checkpoint_every=20),
                     dsrl=DSRLConfig(env_steps=8, warmup_env_steps=8, num_envs=1, eval_every=10**6,
                                     checkpoint_every=10**6))
    s = run_demo(cfg, progress=False)
    assert s["task"] == "steer/Lift-v0" and s["demos"]["episodes"] == 2
    assert s["dsrl"]["algorithm"] == "dsrl-sac" and s["dsrl"]["env_steps"] >= 8
    assert s["export"]["max_abs_diff"] <= 1e-5 and "robot_loop" not in s
    recorded = json.loads((tmp_path / "demo" / "dsrl" / "config.json").read_text())["config"]["dsrl"]
    assert recorded["latent_noise_bound"] == 1.5 and recorded["reward_offset"] == 1.0
