"""The learner's ROS 2 side (WireLearner) on the in-memory transport: topics in, latents and status out,
the console's commands, and a node that goes silent."""

import dataclasses

import numpy as np
import pytest

from robot_helpers import MemoryTransport
from steer.agent.conservative import ConservativeConfig
from steer.agent.dsrl import DSRLConfig
from steer.agent.dsrl.remote import RobotDSRL
from steer.agent.runlog import MemoryLog
from steer.ops.adapt import WireLearner
from steer.robot import messages as m
from steer.robot.config import load_robot_config
from steer.robot.spec import AdaptControl, AdaptStatus, EpisodeStatus, LatentChunk, SafetyState

CONFIG = load_robot_config()
NAMES = ("pusher_x", "pusher_y", "puck_x", "puck_y")
OBS_NAMES = tuple(f"{j}.pos" for j in NAMES) + tuple(f"{j}.vel" for j in NAMES) + ("goal.x", "goal.y")


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def wire(tiny_bc):
    policy, _ = tiny_bc
    cfg = DSRLConfig(num_envs=1, warmup_env_steps=8, hidden_dim=16, num_layers=1, batch_size=8,
                     conservative=ConservativeConfig(variant="epsmix", min_baseline_episodes=1))
    learner = RobotDSRL(policy, cfg, MemoryLog())
    t, clock = MemoryTransport(), Clock()
    w = WireLearner(learner, CONFIG, t, "s1", OBS_NAMES, "sac", node_timeout_s=1.5, clock=clock)
    pub = {k: t.publisher(k, m.DiagnosticStatus) for k in ("/safety_state", "/episode", "/adapt_control",
                                                         "/latent_executed")}
    return w, t, clock, pub


def _node(pub, session="s1", mode="running"):
    pub["/safety_state"].publish(SafetyState(mode, steered=True, adapt_session=session, latents_late=3,
                                             latents_fallback=5, clipped=2).to_message("r"))


def _steps(w, t, n, start=0):
    for i in range(start, start + n):
        t.publisher("/goal", m.Float64MultiArray).publish(m.Float64MultiArray(data=[0.1, 0.2]))
        t.publisher("/joint_states", m.JointState).publish(m.JointState(
            name=list(NAMES), position=[0.01 * i] * 4, velocity=[0.0] * 4))
        w.spin_once(0)


def _latents(t):
    return [LatentChunk.from_message(x) for x in t.sent.get("/latent", [])]


def _status(t):
    return AdaptStatus.from_message(t.sent["/adapt_status"][-1])


def test_a_latent_per_chunk_goes_out_only_while_the_node_holds_the_session(wire):
    w, t, clock, pub = wire
    _node(pub, session="")  # the node runs, but no session is armed: the learner waits
    pub["/episode"].publish(EpisodeStatus("start", "0").to_message("r"))
    _steps(w, t, 8)
    assert _latents(t) == [] and w.learner.current is None and _status(t).state == "waiting"
    _node(pub)
    pub["/episode"].publish(EpisodeStatus("start", "1").to_message("r"))
    _steps(w, t, 12)
    sent = _latents(t)
    assert [(c.episode, c.chunk) for c in sent] == [("1", 1), ("1", 2), ("1", 3)]
    assert all(c.session == "s1" and c.shape == (4, 2) and max(map(abs, c.noise)) <= 1.5 for c in sent)
    status = _status(t)
    assert (status.state, status.late_latents, status.fallbacks, status.shield_interventions) == ("running", 3, 5, 2)
    assert status.gate_choice == "baseline"  # the first episode measures the baseline
    pub["/episode"].publish(EpisodeStatus("end", "1", steps=12, is_success=True).to_message("r"))
    w.spin_once(0)
    assert w.learner.progress.episodes == 1 and w.learner.outcomes[-1].success


def test_the_console_pauses_marks_and_takes_over(wire):
    w, t, clock, pub = wire
    _node(pub)
    pub["/episode"].publish(EpisodeStatus("start", "1").to_message("r"))
    _steps(w, t, 6)
    # A mark about another episode must not judge this one; the one about this episode does.
    pub["/adapt_control"].publish(AdaptControl("mark_success", "s1", episode="0").to_message("r"))
    w.spin_once(0)
    assert w.learner.current.mark is None
    pub["/adapt_control"].publish(AdaptControl("takeover", "s1").to_message("r"))
    w.spin_once(0)
    assert w.learner.current is None and w.learner.outcomes[-1].success is False
    assert w.learner.outcomes[-1].steps == 6
    pub["/adapt_control"].publish(AdaptControl("pause", "").to_message("r"))
    pub["/episode"].publish(EpisodeStatus("start", "2").to_message("r"))
    w.spin_once(0)
    n = len(_latents(t))
    _steps(w, t, 8)
    assert len(_latents(t)) == n and _status(t).state == "paused"  # paused: the node runs its baseline
    pub["/adapt_control"].publish(AdaptControl("resume", "s1").to_message("r"))
    pub["/adapt_control"].publish(AdaptControl("stop", "other-session").to_message("r"))
    w.spin_once(0)
    assert not w.stopped and _status(t).state == "running"


def test_a_silent_node_or_an_estop_discards_the_episode_in_flight(wire):
    w, t, clock, pub = wire
    _node(pub)
    pub["/episode"].publish(EpisodeStatus("start", "1").to_message("r"))
    _steps(w, t, 6)
    clock.now += 2.0  # no safety state for longer than node_timeout_s: the node died
    w.spin_once(0)
    assert w.learner.current is None and w.learner.discarded == 1 and _status(t).state == "waiting"
    _node(pub)
    pub["/episode"].publish(EpisodeStatus("start", "2").to_message("r"))
    _steps(w, t, 3)
    _node(pub, session="", mode="estopped")  # an e-stop ends the session
    w.spin_once(0)
    assert w.learner.current is None and w.learner.discarded == 2
    # A garbled message is refused with one sentence in the status, and the learner keeps going.
    pub["/latent_executed"].publish(m.DiagnosticStatus(values=[m.KeyValue("chunk", "x")]))
    w.spin_once(0)
    assert "refused" in _status(t).last_error


def test_the_status_tells_the_console_when_the_robot_awaits_the_operators_reset(wire):
    w, t, clock, pub = wire
    _node(pub)
    pub["/episode"].publish(EpisodeStatus("start", "1").to_message("r"))
    _steps(w, t, 6)
    pub["/episode"].publish(EpisodeStatus("end", "1", steps=6, is_success=True).to_message("r"))
    pub["/episode"].publish(EpisodeStatus("awaiting_reset", "1").to_message("r"))
    sent = len(t.sent["/adapt_status"])
    w.spin_once(0)
    # Published at once (not at the next 1 Hz beat): the operator is the one who has to act.
    assert len(t.sent["/adapt_status"]) == sent + 1 and _status(t).awaiting_reset == "1"
    assert w.learner.progress.episodes == 1 and _status(t).state == "running"
    pub["/episode"].publish(EpisodeStatus("start", "2").to_message("r"))
    _steps(w, t, 3)
    assert _status(t).awaiting_reset == "" and w.learner.current.episode == "2"
