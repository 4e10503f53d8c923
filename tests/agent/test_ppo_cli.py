"""``steer drive train`` and ``steer drive eval`` over a run directory."""

import dataclasses
import json

import numpy as np
import pytest
from ppo_worlds import tiny_ppo_config

from steer.agent.ppo import PPOConfig
from steer.ops.cli import main
from steer.ops.drive_cmd import DriveEvalConfig, DriveTrainConfig, DriveTrainError, evaluate, train


def test_train_then_eval_writes_the_run_and_a_driving_score_table(tmp_path, capsys):
    ppo = tiny_ppo_config(total_timesteps=2048, checkpoint_every=1)
    # Two local processes (DistributedDataParallel over gloo), as `steer drive train` runs by default.
    assert train(DriveTrainConfig(name="t", runs=tmp_path, eval_routes=8, validation_routes=8, progress=False,
                                  ppo=ppo, processes=2)) == 0
    run = tmp_path / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2048 and summary["eval"]["episodes"] == 8 and summary["world_size"] == 2
    assert 0.0 <= summary["eval"]["driving_score"] <= summary["eval"]["route_completion"] <= 1.0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "charts/SPS" in r] == [1024, 2048]
    # The learning curve: the policy copies kept during training, driven on the held-out routes.
    curve = [r for r in records if "eval/route_completion" in r]
    assert [r["step"] for r in curve] == [1024, 2048]
    # The run keeps the copy that drove best on the validation world (a later copy wins a tie); the
    # held-out figures are that copy's, and `kept` holds it when it is not the last.
    val = [(v["route_completion"], v["driving_score"], i) for i, v in enumerate(summary["validation"])]
    best = max(val)[2]
    assert summary["kept"]["step"] == [1024, 2048][best]
    assert summary["kept"]["policy"] == ("final" if best == 1 else "best")
    assert (run / "checkpoints" / "kept.safetensors").exists() == (best == 0)
    assert curve[best]["eval/route_completion"] == pytest.approx(summary["eval"]["route_completion"])
    assert (run / "report.png").stat().st_size > 10_000
    assert json.loads((run / "config.json").read_text())["config"]["ppo"]["num_envs"] == 32

    # Resume continues the same run to a larger budget; metrics stay monotone.
    ppo2 = tiny_ppo_config(total_timesteps=3072, checkpoint_every=1)
    assert train(DriveTrainConfig(name="t", runs=tmp_path, resume=True, eval_routes=0, progress=False, ppo=ppo2)) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "charts/SPS" in r] == [1024, 2048, 3072]

    capsys.readouterr()
    assert evaluate(DriveEvalConfig(run=run, routes=6, towns=2)) == 0
    out = capsys.readouterr().out
    assert "route completion %" in out and "expert" in out and "red_light" in out
    ev = json.loads((run / "eval.json").read_text())
    assert ev["policy"]["episodes"] == 6 and ev["global_step"] == 3072
    # The scripted expert is the reference: it finishes the held-out routes of this small world.
    assert ev["expert"]["route_completion"] > 0.9


def test_eval_of_the_expert_alone_with_town_size_and_traffic(capsys):
    assert evaluate(DriveEvalConfig(driver="expert", routes=6, towns=2, town_size=2, traffic=0)) == 0
    out = capsys.readouterr().out
    assert "scripted expert" in out and "policy" not in out
    rc = float(next(line for line in out.splitlines() if line.startswith("route completion %")).split()[-1])
    assert rc > 90.0
    with pytest.raises(DriveTrainError, match="town-size"):
        evaluate(DriveEvalConfig(driver="expert", town_size=1))


def test_eval_on_towns_with_compact_junctions(tmp_path, capsys):
    from steer.driving.evaluation import heldout_env_config
    from steer.driving.simulator import build_world
    from steer.driving.town import town_specs

    # Every held-out junction reaches exactly 1 m beyond its widest road (training draws 1-5 m).
    env = heldout_env_config(PPOConfig().env, n_routes=4, n_towns=1, junction_margin=1.0)
    train_town = PPOConfig().env.sim.town
    assert train_town.junction_margin_min is not None and env.sim.town.junction_margin_min is None
    seed = 3
    compact = town_specs(seed, env.sim.town)[2]
    wide = town_specs(seed, dataclasses.replace(env.sim.town, junction_margin=5.0))[2]
    halves = [np.abs(p - p.mean(0)).max() for p in compact]
    assert np.allclose(np.subtract([np.abs(p - p.mean(0)).max() for p in wide], halves), 4.0)
    build_world(env.sim)  # routes exist on compact junctions
    out = tmp_path / "compact.json"
    assert evaluate(DriveEvalConfig(driver="expert", routes=6, towns=2, junction_margin=1.0, out=out)) == 0
    ev = json.loads(out.read_text())
    assert ev["junction_margin"] == 1.0 and ev["expert"]["route_completion"] > 0.9
    with pytest.raises(DriveTrainError, match="junction-margin must not be negative"):
        evaluate(DriveEvalConfig(driver="expert", junction_margin=-1.0))
    with pytest.raises(DriveTrainError, match="a map file or a server has its own"):
        evaluate(DriveEvalConfig(driver="expert", junction_margin=1.0, backend="carla"))


def test_user_errors_are_one_sentence(tmp_path, capsys):
    with pytest.raises(DriveTrainError, match="no checkpoint"):
        train(DriveTrainConfig(name="none", runs=tmp_path, resume=True))
    with pytest.raises(DriveTrainError, match="validation-world-seed 1000003 is the training or the held-out"):
        train(DriveTrainConfig(name="v", runs=tmp_path, validation_world_seed=1_000_003))
    assert main(["drive", "eval", str(tmp_path / "missing")]) == 2
    assert "holds no driving policy" in capsys.readouterr().err
    assert main(["drive", "train", "--runs", str(tmp_path), "--ppo.minibatch-size", "1000", "--no-progress",
                 "--ppo.total-timesteps", "4096"]) == 2
    assert "minibatches" in capsys.readouterr().err
    assert main(["drive", "train", "--runs", str(tmp_path), "--ppo.env.vector.route-frame-m", "10", "72",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "route-frame-m takes two numbers" in err and "Traceback" not in err
    assert not (tmp_path / "carl").exists()  # nothing is created for a config that cannot run
