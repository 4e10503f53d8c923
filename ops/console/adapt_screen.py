"""The Adapt screen: a learner steering the robot's policy (issue 15), its session and the operator's answers.

It shows what the learner reports (episodes, success against the gate's threshold, ρ, the gate's
choice, shield interventions, late latents and fallbacks; :mod:`steer.ops.console.adapt`) beside what
the node reports (mode, armed, steered, its session and latent counters), with the success curve of
the session against the threshold. Start is the signed ``adapt_start``, and so is the confirmation that
the robot is reset (``reset_done``, for a robot in operator reset mode: it lets the robot move again);
pause, resume, stop, the outcome marks and take over are unsigned :class:`~steer.robot.spec.AdaptControl`
messages, and the e-stop is the app's, as on every screen. All of it goes through the app's one
:class:`~steer.ops.console.robot.RobotLink`.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Header, Static
from textual_plotext import PlotextPlot

from steer.ops.console.dialogs import confirm_then_send, signing_link
from steer.ops.console.estop import BottomBar
from steer.ops.console.robot import NO_KEY_ADAPT, NO_KEY_RESET, RobotView
from steer.ops.console.adapt import adapt_status_text

SENT = {"pause": "pause sent: the node runs the baseline until you resume",
        "resume": "resume sent", "stop": "stop sent: the learner ends its session",
        "mark_success": "episode marked a success", "mark_failure": "episode marked a failure",
        "takeover": "take over sent: the episode ends as a failure"}
"""The notice after each session control."""


def adapt_node_text(view: RobotView) -> str:
    """The node panel of the Adapt screen: its mode, session, shield and latent counters."""
    if not view.connected:
        return "[b]not connected[/b]\npress 2, then o,\nto connect to a robot"
    if view.heard_nothing:
        return f"[yellow b]{view.nothing_heard_text()}[/]"
    mode = view.mode.upper()
    style = {"RUNNING": "green", "ESTOPPED": "red", "STOPPED": "yellow"}.get(mode, "yellow")
    armed = "" if view.armed is None else ("[green]armed[/]" if view.armed else "[yellow]not armed[/]")
    i, lat = view.interventions, view.latents
    return "\n".join([
        f"node    [{style} b]{mode}[/] {armed}",
        f"steered {'yes' if view.steered else '[yellow]no (--steered)[/]'}",
        f"session {view.adapt_session[:12] or '[yellow]none armed[/]'}",
        f"shield  clip {i.get('clipped', 0)} wdog {i.get('watchdog_trips', 0)} nan {i.get('non_finite', 0)}",
        f"latents used {lat.get('used', 0)} late {lat.get('late', 0)}",
        f"        fallback {lat.get('fallback', 0)} rejected {lat.get('rejected', 0)}"])


class AdaptScreen(Screen):
    """A learner steering the robot's policy: its session, the success curve, the operator's controls."""

    BINDINGS = [Binding("S", "start", "Start", tooltip="start (asks; signed)"),
                Binding("p", "control('pause')", "Pause", tooltip="pause: baseline only"),
                Binding("r", "control('resume')", "Resume", tooltip="resume the session"),
                Binding("x", "control('stop')", "Stop", tooltip="stop the session"),
                Binding("s", "control('mark_success')", "Success", tooltip="mark the episode a success"),
                Binding("f", "control('mark_failure')", "Failure", tooltip="mark the episode a failure"),
                Binding("t", "control('takeover')", "Take over", tooltip="take over (episode fails)"),
                Binding("C", "confirm_reset", "Reset done", tooltip="reset done (asks; signed)")]

    def __init__(self):
        super().__init__()
        self._plotted: list[tuple[int, float, float]] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="adapt"):
            with Vertical(id="adapt-left"):
                yield Static(id="adapt-status")
                yield PlotextPlot(id="adapt-plot")
            with Vertical(id="adapt-right"):
                yield Static(id="adapt-node")
                yield Button("E-STOP  (e, ctrl+e)", id="estop", variant="error")
                with Horizontal(classes="adapt-buttons"):
                    yield Button("Start… S", id="adapt-start", variant="success")
                    yield Button("Stop x", id="adapt-stop", variant="warning")
                with Horizontal(classes="adapt-buttons"):
                    yield Button("Pause p", id="adapt-pause")
                    yield Button("Resume r", id="adapt-resume")
                with Horizontal(classes="adapt-buttons"):
                    yield Button("Success s", id="adapt-success")
                    yield Button("Fail f", id="adapt-failure")
                    yield Button("Take t", id="adapt-takeover")
        yield BottomBar()

    def on_mount(self) -> None:
        self.title = "steer console · Adapt"
        self.show(self.app.robot_view())
        self.set_interval(max(self.app.settings.robot_refresh_s, 0.1), self._tick)

    def _tick(self) -> None:
        self.show(self.app.robot_view())

    def show(self, view: RobotView) -> None:
        link = self.app.link
        topic = link.topics["adapt status"] if link is not None else "adapt_status"
        if link is None:
            status = self.app.link_error or "no robot configured: press 2, then o, to connect to one"
        else:
            status = adapt_status_text(view.adapt, topic, view.domain_id)
        self.query_one("#adapt-status", Static).update(status)
        self.query_one("#adapt-node", Static).update(adapt_node_text(view))
        if view.adapt.curve != self._plotted:
            self.redraw_plot(view.adapt.curve)

    def redraw_plot(self, curve: list[tuple[int, float, float]]) -> None:
        """Success of the recent episodes against the gate's threshold, by episode."""
        plot = self.query_one("#adapt-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if curve:
            episodes = [e for e, _, _ in curve]
            plt.plot(episodes, [s for _, s, _ in curve], label="success", marker="braille", color="green")
            plt.plot(episodes, [t for _, _, t in curve], label="threshold", marker="braille", color="red")
        plt.ylim(0.0, 1.0)
        plt.title("success vs threshold, by episode" if curve else "no episodes yet")
        self._plotted = list(curve)
        plot.refresh()

    # -- the operator --
    @on(Button.Pressed, "#estop")
    def _estop(self) -> None:
        self.app.action_estop()

    @on(Button.Pressed, "#adapt-start")
    def _start(self) -> None:
        self.action_start()

    @on(Button.Pressed, ".adapt-buttons Button")
    def _control_button(self, event: Button.Pressed) -> None:
        command = {"adapt-stop": "stop", "adapt-pause": "pause", "adapt-resume": "resume",
                   "adapt-success": "mark_success", "adapt-failure": "mark_failure",
                   "adapt-takeover": "takeover"}.get(event.button.id or "")
        if command:
            self.action_control(command)

    def action_control(self, command: str) -> None:
        """An unsigned session control: sent at once, without a key and without asking."""
        link = self.app.link
        if link is None:
            self.notify("no robot connected", severity="error")
            return
        link.adapt_control(command)
        self.notify(SENT[command], severity="warning" if command in ("stop", "takeover", "pause") else "information")

    def action_start(self) -> None:
        """Ask, then send the signed ``adapt_start`` of the session the learner reports."""
        link = signing_link(self, NO_KEY_ADAPT)
        if link is None:
            return
        view = link.view
        status = view.adapt.status
        if status is None or not status.session:
            self.notify(f"no learner heard on {link.topics['adapt status']}: start one with "
                        f"steer adapt --policy runs/<bc> --domain-id {link.domain_id}", severity="error")
            return
        if view.adapt.silent:
            self.notify(f"the learner has been silent for {view.adapt.age_s:.0f} s: is steer adapt still running?",
                        severity="error")
            return
        if status.state in ("stopped", "done"):
            self.notify(f"the learner's session {status.session[:12]} is {status.state}: start a new steer adapt.",
                        severity="error")
            return
        if view.armed is not None and not view.steered:
            self.notify("the node does not run in steered mode: start it with steer robot run --steered.",
                        severity="error")
            return
        session = status.session
        question = (f"Start adaptation session {session[:12]}? The learner will steer the policy while the robot "
                    "is armed." + ("" if view.armed else " The robot is not armed yet (A on Robots)."))
        confirm_then_send(self, link, question, lambda: link.adapt_start(session),
                          f"signed adapt_start sent for session {session[:12]}")

    def action_confirm_reset(self) -> None:
        """Ask, then send the signed ``reset_done`` for the episode after which the robot waits."""
        link = signing_link(self, NO_KEY_RESET)
        if link is None:
            return
        status = link.view.adapt.status
        episode = status.awaiting_reset if status is not None else ""
        if not episode:
            self.notify("the robot is not waiting for a reset (only a robot in reset mode operator does, after "
                        "each episode)", severity="error")
            return
        question = (f"Is the scene reset after episode {episode[:12]}? The robot starts its next episode and the "
                    "policy moves it.")
        confirm_then_send(self, link, question, lambda: link.reset_done(episode),
                          f"signed reset_done sent for episode {episode[:12]}")
