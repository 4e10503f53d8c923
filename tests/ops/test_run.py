"""The run-directory module: the writer, the readers, rewind, the run kind, and stage results round-tripping
through summary.json."""

import json
from pathlib import Path

from steer.agent.runlog import MemoryLog, policy_kind
from steer.ops.run import Run, read_metrics, read_run, read_summary
from steer.ops.stages import (BCResult, DSRLResult, EvalSummary, GateSummary, SafeSetSummary, finished)


def test_resume_rewinds_metrics_and_drops_a_torn_line(tmp_path):
    with Run(tmp_path / "r", {"lr": 1e-3}, kind="bc", tensorboard=False) as run:
        for step in (10, 20, 30):
            run.log(step, {"losses/bc": step / 10})
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "losses/b')  # a writer killed mid-line
    assert [r["step"] for r in read_metrics(tmp_path / "r")] == [10, 20, 30]
    run = Run(tmp_path / "r", {"lr": 1e-3}, kind="bc", resume=True, tensorboard=False)
    run.rewind(20)  # the checkpoint being resumed is at step 20
    run.log(25, {"losses/bc": 9.0})
    run.finish({"ok": True})
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [10, 20, 25]
    assert read_summary(tmp_path / "r") == {"ok": True}
    info = read_run(tmp_path / "r")
    assert info.status == "finished" and info.kind == "bc" and info.step == 25


def test_memory_log_rewinds_like_a_run():
    log = MemoryLog()
    for step in (1, 2, 3, 4):
        log.log(step, {"x": float(step)})
    log.rewind(2)
    log.log(3, {"x": 30.0})
    assert log.series("x") == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_policy_kind_from_checkpoints_and_console_kind_falls_back_to_it(tmp_path):
    run = tmp_path / "x"
    assert policy_kind(run) is None
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "policy.safetensors").write_bytes(b"")
    assert policy_kind(run) == "bc"
    (run / "checkpoints" / "dsrl_policy.safetensors").write_bytes(b"")
    assert policy_kind(run) == "dsrl"  # a DSRL run may also hold its base policy
    (run / "metrics.jsonl").write_text('{"step": 5, "time": 1.0}\n')
    assert read_run(run).kind == "dsrl"


def test_stage_results_round_trip_through_summary_json(tmp_path):
    ev = EvalSummary(success_rate=0.75, return_mean=-3.5, episodes=8, length_mean=41.0)
    bc = BCResult(tmp_path / "bc", "steer/PlanarPush-v0", 0, 30, 0.5, 12.0, ev)
    dsrl = DSRLResult(tmp_path / "d", "steer/PlanarPush-v0", 0, "dsrl-sac", 400, 9, [[200, 0.5], [400, 0.75]], 30.0,
                      report="r.png", eval=ev, safe_set=SafeSetSummary(50, 3, 0.02),
                      conservative=GateSummary("epsmix", 9, 4, 5, 0.4, [0.2, 0.9]))
    for res in (bc, dsrl):
        res.run.mkdir()
        (res.run / "summary.json").write_text(json.dumps(res.summary()))
        assert finished(res.run, type(res)) == res
    s = dsrl.summary()
    assert "run" not in s and s["conservative"]["explorer_episodes"] == 4 and s["eval"]["episodes"] == 8
    bare = BCResult(tmp_path / "b2", "t", 1, 3, 1.0, 1.0)
    assert "eval" not in bare.summary()
    assert finished(Path(tmp_path / "missing"), BCResult) is None
