"""The Robots screen: one robot's joints, last command, shield state and latency over DDS; the e-stop."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Header, Static

from steer.ops.console import ConsoleError
from steer.ops.console.dialogs import ConnectScreen, confirm_then_send, signing_link
from steer.ops.console.estop import BottomBar
from steer.ops.console.robot import NO_KEY, RobotView
from steer.ops.console.text import fmt


def robot_status_text(view: RobotView) -> str:
    """The safety panel of the Robots screen."""
    if not view.connected:
        return "[b]not connected[/b]\npress o to connect to a robot\n(or steer console --domain-id N)"
    if view.heard_nothing:
        return (f"[yellow b]{view.nothing_heard_text()}[/]\n\nIs the robot running? Check the domain id "
                "(--domain-id, $ROS_DOMAIN_ID) and the namespace (--namespace), or press o.")
    mode = view.mode.upper()
    style = {"RUNNING": "green", "ESTOPPED": "red", "STOPPED": "yellow"}.get(mode, "yellow")
    lines = [f"mode      [{style} b]{mode}[/]",
             f"reason    {view.reason[:22]}",
             f"e-stop    {'[red b]LATCHED[/]' if view.estop_latched else 'released'}"
             + ("" if view.armed is None else f"   {'[green]armed[/]' if view.armed else '[yellow]not armed[/]'}"),
             f"watchdog  {'[red b]TRIPPED[/]' if view.watchdog_tripped else 'ok'}"
             f" ({view.interventions.get('watchdog_trips', 0)} trips)",
             f"clipped   {view.interventions.get('clipped', 0)}   non-finite {view.interventions.get('non_finite', 0)}",
             f"latency   {fmt(view.latency_ms, '.1f')} ms (max {fmt(view.latency_max_ms, '.1f')})",
             f"commands  {view.commands_per_s:.1f}/s",
             f"robot     {'[red]silent[/]' if view.silent else 'publishing'}"]
    if view.policy:
        lines.append(f"policy    {Path(view.policy).name[:22]}")
    if view.operator_refusals:
        lines.append(f"[red]refused {view.operator_refusals}[/]: {view.last_refusal[:60]}")
    return "\n".join(lines)


class RobotsScreen(Screen):
    """One robot's topics: joints, last command, shield state; the e-stop."""

    BINDINGS = [Binding("R", "release", "Release", tooltip="release the e-stop (asks)"),
                Binding("A", "arm", "Arm", tooltip="arm the robot (asks)"),
                Binding("o", "connect", "Connect", tooltip="connect to another robot")]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="robot"):
            with Vertical(id="robot-left"):
                yield DataTable(id="joints", cursor_type="none")
                yield Static(id="command")
                yield Static(id="topics")
            with Vertical(id="robot-right"):
                yield Static(id="safety")
                yield Button("E-STOP  (e, ctrl+e)", id="estop", variant="error")
                with Horizontal(id="operator-buttons"):
                    yield Button("Release… R", id="release")
                    yield Button("Arm… A", id="arm")
        yield BottomBar()

    def on_mount(self) -> None:
        self.title = "steer console · Robots"
        joints = self.query_one("#joints", DataTable)
        joints.add_column("joint", key="joint")
        joints.add_column("position", key="position")
        joints.add_column("velocity", key="velocity")
        self.show(self.app.robot_view())
        self.set_interval(max(self.app.settings.robot_refresh_s, 0.1), self._tick)

    def _tick(self) -> None:
        self.show(self.app.robot_view())

    def show(self, view: RobotView) -> None:
        table = self.query_one("#joints", DataTable)
        if [k.value for k in table.rows] != list(view.joints):
            table.clear()
            for name in view.joints:
                table.add_row(name, "", "", key=name)
        for name, (pos, vel) in view.joints.items():  # in place: a 10 Hz redraw must not flicker
            table.update_cell(name, "position", f"{pos:+.4f}")
            table.update_cell(name, "velocity", f"{vel:+.4f}")
        cmd = " ".join(f"{x:+.3f}" for x in view.command) if view.command else "-"
        self.query_one("#command", Static).update(f"command {cmd}  ({fmt(view.command_age_s, '.2f')} s ago)")
        link = self.app.link
        if link is not None:
            self.query_one("#topics", Static).update(
                f"DDS domain {link.domain_id} · {link.topics['joint states']}\n→ {link.topics['commands']}")
        else:
            self.query_one("#topics", Static).update(self.app.link_error or "no robot configured")
        self.query_one("#safety", Static).update(robot_status_text(view))

    @on(Button.Pressed, "#estop")
    def _estop(self) -> None:
        self.app.action_estop()

    @on(Button.Pressed, "#release")
    def _release(self) -> None:
        self.action_release()

    @on(Button.Pressed, "#arm")
    def _arm(self) -> None:
        self.action_arm()

    def action_connect(self) -> None:
        app = self.app
        link = app.link
        current = f"{link.domain_id} {link.config.namespace}".strip() if link else str(app.settings.domain_id)

        def connect(address: str | None) -> None:
            if not address:
                return
            try:
                app.connect_robot(address)
            except ConsoleError as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"connected to DDS domain {app.link.domain_id}")
            self.show(app.robot_view())

        app.push_screen(ConnectScreen(current), connect)

    def _signed(self, what: str, question: str, send) -> None:
        """Ask, then send a signed command; every refusal here is one sentence."""
        link = signing_link(self, NO_KEY)
        if link is not None:
            confirm_then_send(self, link, question, lambda: send(link), f"signed {what} sent")

    def action_release(self) -> None:
        self._signed("release", "Release the e-stop? The robot stays unarmed until you arm it (A).",
                     lambda link: link.release())

    def action_arm(self) -> None:
        self._signed("arm", "Arm the robot? The policy will start moving it.", lambda link: link.arm())
