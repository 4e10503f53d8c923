"""``steer adapt``: DSRL on a robot, the learner in its own process, talking ROS 2 topics to the policy node.

The robot runs the BC policy in its policy node in steered mode (``steer robot run --policy bc.onnx
--steered``); the operator arms an adaptation session with a signed ``adapt_start``. This process:

* reads the robot's observations (joint states and vector topics, assembled by name exactly as the node
  does), its episode events (``EpisodeStatus``: starts, ends, ``is_success``, and ``awaiting_reset`` where the
  operator confirms resets: passed on in the status for the console), the node's executed latents
  and safety state, and the console's :class:`~steer.robot.spec.AdaptControl` commands;
* publishes a latent per chunk (:class:`~steer.robot.spec.LatentChunk`) and its
  :class:`~steer.robot.spec.AdaptStatus` about once a second and on every change;
* learns with :class:`steer.agent.dsrl.remote.RobotDSRL` (DSRL-SAC or DSRL-NA, the conservative gate with
  the baseline measured on this robot), in a run directory like any other (config, metrics, checkpoints,
  ``--resume``, report.png).

It never holds the robot up: the node runs the baseline's noise whenever a latent is late or missing, so a
learner that dies leaves the robot running the BC policy. A node that goes silent (no safety state for
``node_timeout_s``), an e-stop or a session the node no longer holds discards the episode in flight; the
learner waits for the session to be armed again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from steer.agent.conservative import ConservativeConfig
from steer.agent.dsrl.core import DSRLConfig
from steer.ops.run import RunError

STATUS_PERIOD_S = 1.0


@dataclass(frozen=True)
class AdaptConfig:
    """Adapt a BC diffusion policy on a robot with DSRL: the learner, off the robot, steers the policy node."""

    policy: Path
    """BC run directory (``steer bc``) whose exported ONNX the robot's node runs in steered mode."""
    domain_id: int = field(default=0, metadata={"range": "[0, 232]"})
    """DDS domain id of the robot."""
    algo: Literal["sac", "na"] = "sac"
    """``sac`` (DSRL-SAC) or ``na`` (DSRL-NA)."""
    name: str = "adapt"
    """Run name: the run lives in <runs>/<name>."""
    runs: Path = Path("runs")
    """Folder of all runs."""
    resume: bool = False
    """Continue the run from its last checkpoint."""
    session: str = ""
    """Adaptation session id the operator arms with a signed adapt_start (default: the run name)."""
    limits: str | None = None
    """Robot config YAML with joints, topics and rates (default: the packaged PlanarPush one)."""
    namespace: str | None = None
    """Robot namespace (default: the YAML's)."""
    eval_episodes: int = field(default=0, metadata={"range": "[0, inf)"})
    """After the budget: episodes run with the deterministic latent actor (no gate, nothing learned), whose
    success rate is the run's final figure (0: none)."""
    node_timeout_s: float = field(default=1.5, metadata={"range": "(0, inf)"})
    """No safety state from the node for this long: the node is gone and the episode in flight is discarded."""
    max_wall_s: float | None = field(default=None, metadata={"range": "(0, inf)"})
    """Stop (checkpoint, summary) after this many seconds (default: at the env-step budget)."""
    loopback: bool = True
    """Keep DDS traffic on loopback (ignored when CYCLONEDDS_URI is set)."""
    progress: bool = True
    """Show a progress bar."""
    impair_delay_ms: float = field(default=0.0, metadata={"range": "[0, 1000]"})
    """Benchmarks: hold every latent this learner sends for this many ms (an injected network delay)."""
    impair_drop: float = field(default=0.0, metadata={"range": "[0, 1)"})
    """Benchmarks: drop this fraction of the messages this learner sends and receives (seeded)."""
    dsrl: DSRLConfig = DSRLConfig(num_envs=1, conservative=ConservativeConfig(variant="epsmix"))
    """DSRL hyperparameters (one robot: one env; the conservative gate, EpsMix, is on by default)."""


@dataclass(frozen=True)
class AdaptResult:
    """What ``steer adapt`` learned."""

    run: Path
    algo: str
    env_steps: int
    episodes: int
    discarded: int
    success_recent: float
    """Success over the last 20 learned-from episodes."""
    baseline_success: float
    """L_b: the baseline's lower success bound measured on the robot."""
    eval_success: float | None
    eval_episodes: int
    late_latents: int
    fallbacks: int
    latents_used: int
    wall_s: float
    curve: list = field(default_factory=list)
    """[env_steps after it, success (0/1), gate plan] of every learned-from episode."""

    def summary(self) -> dict:
        from steer.agent.runlog import to_jsonable

        return to_jsonable(self)


class WireLearner:
    """The learner's ROS 2 side: topics in, :class:`RobotDSRL` calls, latents and status out.

    Transport-agnostic (the DDS transport, or an in-memory one in tests); :meth:`spin_once` does one round.
    """

    def __init__(self, learner, config, transport, session: str, obs_names: tuple[str, ...], algo: str,
                 node_timeout_s: float = 1.5, clock=time.monotonic):
        from steer.robot import messages as msg
        from steer.robot.intake import ObservationAssembler

        self.learner, self.config, self.transport = learner, config, transport
        self.session, self.algo, self.node_timeout_s, self.clock = session, algo, node_timeout_s, clock
        c = config
        self.assembler = ObservationAssembler(config, obs_names)
        sub = transport.subscription
        # Where the transport gives no send times, messages are handled in this order: state before events,
        # events before the observations they frame.
        self._subs = {"safety": sub(c.topic(c.safety_topic), msg.DiagnosticStatus),
                      "control": sub(c.topic(c.adapt_control_topic), msg.DiagnosticStatus),
                      "episode": sub(c.topic(c.episode_topic), msg.DiagnosticStatus)}
        for v in c.vectors:
            self._subs["vector:" + v.name] = sub(c.topic(v.topic), msg.Float64MultiArray)
        self._subs["executed"] = sub(c.topic(c.latent_executed_topic), msg.DiagnosticStatus)
        self._subs["joint"] = sub(c.topic(c.joint_state_topic), msg.JointState)
        self._latent_pub = transport.publisher(c.topic(c.latent_topic), msg.DiagnosticStatus)
        self._status_pub = transport.publisher(c.topic(c.adapt_status_topic), msg.DiagnosticStatus)
        self.state = "waiting"
        self.paused = self.stopped = False
        self.node = None  # the node's last SafetyState
        self._node_seen = -float("inf")
        self._last_status = -float("inf")
        self._status_key = None
        self.last_error = ""
        self.latents_sent = 0
        self.awaiting_reset = ""  # the episode after which the robot waits for the operator's reset

    # -- inputs ------------------------------------------------------------------------------------
    def _take_all(self) -> list[tuple[int, int, str, object]]:
        """Every pending message, in the order it was sent where the transport says (writer time)."""
        out, seq = [], 0
        for name, s in self._subs.items():
            items = s.take_timed() if hasattr(s, "take_timed") else s.take()
            for m, t in items:
                out.append((int(t), seq, name, m))
                seq += 1
        if all(hasattr(s, "take_timed") for s in self._subs.values()):
            out.sort(key=lambda x: (x[0], x[1]))
        return out

    @property
    def node_ready(self) -> bool:
        """The node is alive, holds this session and runs (not e-stopped)."""
        n = self.node
        return (n is not None and self.clock() - self._node_seen <= self.node_timeout_s
                and n.adapt_session == self.session and n.mode == "running")

    def spin_once(self, timeout_s: float = 0.005) -> None:
        """Wait for input (at most ``timeout_s``), handle it, publish the status when due."""
        self.transport.wait(timeout_s)
        for _, _, name, m in self._take_all():
            try:
                self._handle(name, m)
            except Exception as err:  # noqa: BLE001 - no received message may stop the learner
                if getattr(err, "user_facing", False) or type(err).__name__ == "WireError":
                    self.last_error = f"a {name} message was refused: {err}"
                else:
                    raise
        if self.learner.current is not None and not self.node_ready:
            self.learner.discard_episode()  # the node died, stopped or lost the session: outcome unknown
        self.state = ("done" if self.learner.done and not self.learner.deterministic else
                      "stopped" if self.stopped else "paused" if self.paused else
                      "running" if self.node_ready else "waiting")
        self.publish_status()

    def _handle(self, name: str, m) -> None:
        from steer.robot.spec import AdaptControl, EpisodeStatus, LatentChunk, SafetyState

        if name == "joint":
            if not m.name:
                return  # the robot's discovery handshake
            now = time.monotonic_ns()
            if not self.assembler.update_joints(m, now):
                return
            obs = self.assembler.vector()
            if obs is None or self.learner.current is None or self.paused:
                return
            decision = self.learner.observe(obs)
            if decision is not None and self.node_ready:
                chunk, w = decision
                latent = LatentChunk(session=self.session, episode=self.learner.current.episode, chunk=chunk,
                                     chunk_len=self.learner.chunk_len, action_dim=self.learner.noise_dim
                                     // self.learner.chunk_len, noise=tuple(float(x) for x in w),
                                     sent_ns=time.time_ns())
                self._latent_pub.publish(latent.to_message(self.config.name))
                self.latents_sent += 1
        elif name.startswith("vector:"):
            self.assembler.update_vector(name.split(":", 1)[1], m)
        elif name == "episode":
            status = EpisodeStatus.from_message(m)
            if status.event == "awaiting_reset":
                self.awaiting_reset = status.episode  # shown to the operator, who confirms it (signed)
            elif status.event == "start":
                self.awaiting_reset = ""
                if self.node_ready and not self.paused and not self.stopped and not self._budget_spent():
                    self.learner.start_episode(status.episode)
                elif self.learner.current is not None:
                    self.learner.discard_episode()
            elif status.event == "end" and self.learner.current is not None \
                    and self.learner.current.episode == status.episode:
                self.learner.end_episode(status.steps, status.is_success)
        elif name == "executed":
            latent = LatentChunk.from_message(m)
            if latent.session == self.session:
                # A chunk of this session ran: the node is alive (its 1 Hz safety state may have been lost).
                self._node_seen = self.clock()
                self.learner.executed(latent.episode, latent.chunk, latent.array(), latent.source,
                                      np.asarray(latent.obs) if latent.obs else None)
        elif name == "safety":
            self.node = SafetyState.from_message(m)
            self._node_seen = self.clock()
        elif name == "control":
            cmd = AdaptControl.from_message(m)
            if cmd.session and cmd.session != self.session:
                return
            ep = self.learner.current
            if cmd.episode and cmd.command in ("mark_success", "mark_failure", "takeover") \
                    and (ep is None or ep.episode != cmd.episode):
                return  # about an episode that is over (or another one): it must not judge the current one
            self._control(cmd.command)

    def _budget_spent(self) -> bool:
        return self.learner.done and not self.learner.deterministic

    def _control(self, command: str) -> None:
        ep = self.learner.current
        if command == "pause":
            self.paused = True
            self.learner.discard_episode()
        elif command == "resume":
            self.paused = False
        elif command == "stop":
            self.stopped = True
            self.learner.discard_episode()
        elif command in ("mark_success", "mark_failure"):
            self.learner.mark(command == "mark_success")
        elif command == "takeover" and ep is not None:
            # The operator took the robot: the episode ends here, as a failure.
            self.learner.mark(False)
            self.learner.end_episode(len(ep.observations), False)

    # -- outputs -----------------------------------------------------------------------------------
    def status(self):
        """The :class:`AdaptStatus` now."""
        from steer.robot.spec import AdaptStatus

        lr = self.learner
        recent = lr.progress.recent_success
        n = self.node
        plan = lr.current.plan if lr.current is not None else ""
        return AdaptStatus(
            session=self.session, state=self.state, algo=self.algo, episodes=lr.progress.episodes,
            env_steps=lr.progress.env_steps, success=float(np.mean(recent)) if recent else 0.0,
            **{k: float(v) for k, v in lr.gate_status().items()},
            gate_choice={"explorer": "explore", "mix": "explore", "baseline": "baseline"}.get(plan, ""),
            shield_interventions=(n.clipped + n.watchdog_trips + n.non_finite) if n is not None else 0,
            late_latents=n.latents_late if n is not None else 0,
            fallbacks=n.latents_fallback if n is not None else 0, last_error=self.last_error,
            awaiting_reset=self.awaiting_reset)

    def publish_status(self, force: bool = False) -> None:
        status = self.status()
        key = (status.state, status.episodes, status.gate_choice, status.last_error, status.awaiting_reset)
        now = self.clock()
        if force or key != self._status_key or now - self._last_status >= STATUS_PERIOD_S:
            self._status_pub.publish(status.to_message(self.config.name))
            self._status_key, self._last_status = key, now


def _check(cfg: AdaptConfig):
    from steer.ops.robot_cmd import check_domain_id
    from steer.ops.stages import load_bc_run

    check_domain_id(cfg.domain_id)
    if not (cfg.policy / "checkpoints").is_dir():
        raise RunError(f"{cfg.policy} is not a BC run (no checkpoints/); train one with `steer bc` and pass its "
                       "directory to --policy.")
    policy, meta = load_bc_run(cfg.policy)
    if not meta.get("obs_names"):
        raise RunError(f"the BC run {cfg.policy} records no observation names; train it again with `steer bc`.")
    return policy, meta


def run_adapt(cfg: AdaptConfig, transport=None, progress: bool | None = None) -> AdaptResult:
    """Run the learner until the env-step budget (then ``eval_episodes``), ``stop``, or ``max_wall_s``."""
    import torch

    from steer.agent.dsrl.remote import RobotDSRL
    from steer.ops.run import Run
    from steer.robot.processes import robot_config

    policy, meta = _check(cfg)
    dcfg = replace(cfg.dsrl, algorithm=cfg.algo, num_envs=1)
    if dcfg.latent_noise_bound < policy.cfg.latent_noise_bound:
        dcfg = replace(dcfg, latent_noise_bound=policy.cfg.latent_noise_bound)
    session = cfg.session or cfg.name
    config = robot_config(cfg.limits, namespace=cfg.namespace)
    torch.set_num_threads(1)
    own_transport = transport is None
    if own_transport:
        from steer.robot.dds_transport import DdsTransport, use_loopback_config

        if cfg.loopback:
            use_loopback_config()
        transport = DdsTransport(cfg.domain_id)
    if cfg.impair_delay_ms > 0 or cfg.impair_drop > 0:
        transport = ImpairedTransport(transport, cfg.impair_delay_ms / 1e3, cfg.impair_drop, seed=cfg.dsrl.seed)
    t0 = time.time()
    show = cfg.progress if progress is None else progress
    with Run(cfg.runs / cfg.name, replace(cfg, dsrl=dcfg), kind="dsrl", resume=cfg.resume) as run:
        learner = RobotDSRL(policy, dcfg, run, resume=cfg.resume)
        wire = WireLearner(learner, config, transport, session, tuple(meta["obs_names"]), dcfg.algorithm,
                           cfg.node_timeout_s)
        from tqdm import tqdm

        bar = tqdm(total=dcfg.env_steps, initial=learner.progress.env_steps, desc=f"adapt-{dcfg.algorithm}",
                   unit="env-step", disable=not show)
        curve: list[list[float]] = []
        seen = len(learner.outcomes)
        end = None if cfg.max_wall_s is None else time.monotonic() + cfg.max_wall_s
        evaluating = False
        eval_start = 0
        # Gradient updates run on their own thread, so the robot's next latent never waits behind one.
        updater = Updater(learner)
        try:
            while not wire.stopped and (end is None or time.monotonic() < end):
                wire.spin_once(0.005)
                updater.check()
                if len(learner.outcomes) > seen:
                    for o in learner.outcomes[seen:]:
                        bar.update(o.steps)
                        if not evaluating:
                            curve.append([learner.progress.env_steps, float(o.success), o.plan])
                    seen = len(learner.outcomes)
                    if not evaluating and learner.progress.due_checkpoint():
                        learner.checkpoint()
                if learner.done and not evaluating:
                    # The updates still owed run before the final evaluation, within --max-wall-s.
                    skipped = updater.drain(end)
                    if skipped:
                        print(f"steer adapt: {skipped} owed updates left undone at --max-wall-s.", flush=True)
                    learner.checkpoint()
                    if cfg.eval_episodes <= 0:
                        break
                    evaluating, eval_start = True, len(learner.outcomes)
                    learner.discard_episode()
                    learner.deterministic = True
                if evaluating and len(learner.outcomes) - eval_start >= cfg.eval_episodes:
                    break
        finally:
            updater.stop()
            bar.close()
            wire.state = "done" if learner.done else "stopped"
            wire.publish_status(force=True)
        if not evaluating:
            learner.checkpoint()
        evals = learner.outcomes[eval_start:] if evaluating else []
        eval_success = float(np.mean([o.success for o in evals])) if evals else None
        if eval_success is not None:
            run.log(learner.progress.env_steps, {"eval/final_success_rate": eval_success})
        learner.save_policy({k: meta[k] for k in ("task", "obs_names", "action_names", "control_rate_hz",
                                                   "action_low", "action_high") if k in meta}
                            | {"source_run": str(run.path), "base_run": str(cfg.policy)})
        n = wire.node
        recent = learner.progress.recent_success
        result = AdaptResult(run.path, dcfg.algorithm, learner.progress.env_steps, learner.progress.episodes,
                             learner.discarded, float(np.mean(recent)) if recent else 0.0,
                             learner.gate_status()["baseline_success"], eval_success, len(evals),
                             n.latents_late if n else 0, n.latents_fallback if n else 0,
                             n.latents_used if n else 0, time.time() - t0, curve)
        _report(cfg, result)
        run.finish(result.summary())
    if own_transport:
        transport.close()
    return result


class Updater:
    """Runs the learner's owed gradient updates on a thread of their own, one at a time."""

    def __init__(self, learner):
        import threading

        self.learner = learner
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="adapt-updates", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import sys

        # Hand the interpreter back often: the thread that answers the robot must not wait for an update's
        # Python parts (the default switch interval, 5 ms, would put latents behind them).
        sys.setswitchinterval(0.0005)
        try:
            while not self._stop.is_set():
                if not self.learner.update(1):
                    self._stop.wait(0.005)
                else:
                    time.sleep(0.0005)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            self.error = err

    def drain(self, deadline: float | None = None) -> int:
        """Wait until every owed update ran, or ``deadline`` (monotonic) passes; returns the updates left undone
        (they are dropped)."""
        while self.learner.owed_updates and self._thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                with self.learner.lock:
                    left, self.learner.owed_updates = self.learner.owed_updates, 0
                return left
            time.sleep(0.01)
        self.check()
        return 0

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.check()


class ImpairedTransport:
    """A transport that delays what it publishes and drops a fraction of what passes (benchmarks only).

    Publishing never blocks: a delayed message waits in a queue that :meth:`wait` and later publishes flush
    when due. Receiving drops before the learner sees a message, sending before it leaves.
    """

    def __init__(self, inner, delay_s: float, drop: float, seed: int = 0):
        self.inner, self.delay_s, self.drop = inner, float(delay_s), float(drop)
        self.rng = np.random.default_rng(seed + 31)
        self._queue: list[tuple[float, object, object]] = []
        self.dropped = self.delayed = 0

    def _lost(self) -> bool:
        lost = self.drop > 0 and self.rng.random() < self.drop
        self.dropped += int(lost)
        return lost

    def _flush(self) -> None:
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, pub, m = self._queue.pop(0)
            pub.publish(m)

    def publisher(self, topic, msg_type, latched=False):
        outer, inner = self, self.inner.publisher(topic, msg_type, latched=latched)

        class _Pub:
            def publish(self, m):
                if outer._lost():
                    return
                if outer.delay_s > 0:
                    outer._queue.append((time.monotonic() + outer.delay_s, inner, m))
                    outer.delayed += 1
                    outer._flush()
                else:
                    inner.publish(m)

            def matched(self):
                return inner.matched()

            def wait_acked(self, timeout_s):
                return inner.wait_acked(timeout_s)

        return _Pub()

    def subscription(self, topic, msg_type, latched=False):
        outer, inner = self, self.inner.subscription(topic, msg_type, latched=latched)

        class _Sub:
            def take(self):
                return [x for x in inner.take() if not outer._lost()]

            def take_timed(self):
                return [x for x in inner.take_timed() if not outer._lost()]

            def matched(self):
                return inner.matched()

        return _Sub()

    def wait(self, timeout_s: float) -> None:
        if self._queue:
            timeout_s = min(timeout_s, max(0.0, self._queue[0][0] - time.monotonic()))
        self.inner.wait(timeout_s)
        self._flush()

    def close(self) -> None:
        self.inner.close()


def _report(cfg: AdaptConfig, result: AdaptResult) -> None:
    """report.png: the learning curve on the robot against the BC level."""
    from steer.ops.report import dsrl_report
    from steer.ops.run import read_summary

    bc = read_summary(cfg.policy) or {}
    try:
        dsrl_report(result.run, bc.get("eval", {}).get("success_rate"), result.run / "report.png",
                    title="DSRL on the robot", final_success=result.eval_success,
                    final_episodes=result.eval_episodes)
    except Exception as err:  # noqa: BLE001 - a plot must not lose a finished run
        print(f"steer adapt: report.png not written ({type(err).__name__}: {err})")
