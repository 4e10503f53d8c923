"""``steer drive train`` and ``steer drive eval`` over a run directory."""

import json

import pytest
from ppo_worlds import tiny_ppo_config

from steer.ops.cli import main
from steer.ops.drive_cmd import DriveEvalConfig, DriveTrainConfig, DriveTrainError, evaluate, train


def test_train_then_eval_writes_the_run_and_a_driving_score_table(tmp_path, capsys):
    ppo = tiny_ppo_config(total_timesteps=2048, checkpoint_every=1)
    assert train(DriveTrainConfig(name="t", runs=tmp_path, eval_routes=8, progress=False, ppo=ppo)) == 0
    run = tmp_path / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2048 and summary["eval"]["episodes"] == 8
    assert 0.0 <= summary["eval"]["driving_score"] <= summary["eval"]["route_completion"] <= 1.0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1024, 2048]
    assert json.loads((run / "config.json").read_text())["config"]["ppo"]["num_envs"] == 32

    # Resume continues the same run to a larger budget; metrics stay monotone.
    ppo2 = tiny_ppo_config(total_timesteps=3072, checkpoint_every=1)
    assert train(DriveTrainConfig(name="t", runs=tmp_path, resume=True, eval_routes=0, progress=False, ppo=ppo2)) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1024, 2048, 3072]

    capsys.readouterr()
    assert evaluate(DriveEvalConfig(run=run, routes=6, towns=2)) == 0
    out = capsys.readouterr().out
    assert "route completion %" in out and "expert" in out and "red_light" in out
    ev = json.loads((run / "eval.json").read_text())
    assert ev["policy"]["episodes"] == 6 and ev["global_step"] == 3072
    # The scripted expert is the reference: it finishes the held-out routes of this small world.
    assert ev["expert"]["route_completion"] > 0.9


def test_user_errors_are_one_sentence(tmp_path, capsys):
    with pytest.raises(DriveTrainError, match="no checkpoint"):
        train(DriveTrainConfig(name="none", runs=tmp_path, resume=True))
    assert main(["drive", "eval", str(tmp_path / "missing")]) == 2
    assert "holds no driving policy" in capsys.readouterr().err
    assert main(["drive", "train", "--runs", str(tmp_path), "--ppo.minibatch-size", "1000", "--no-progress",
                 "--ppo.total-timesteps", "4096"]) == 2
    assert "minibatches" in capsys.readouterr().err
    assert not (tmp_path / "carl").exists()  # nothing is created for a config that cannot run
