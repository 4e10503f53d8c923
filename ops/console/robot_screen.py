"""The Robots screen: one robot's joints, last command, shield state and latency over DDS; the e-stop."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from steer.ops.console import ConsoleError
from steer.ops.console.dialogs import ConfirmScreen, ConnectScreen
from steer.ops.console.robot import RobotView
from steer.ops.console.text import fmt
from steer.robot.errors import RobotError


def robot_status_text(view: RobotView, topics_ok: bool = True) -> str:
    """The safety panel of the Robots screen."""
    if not view.connected:
        return "[b]not connected[/b]\npress o to connect to a robot\n(or steer console --domain-id N)"
    mode = view.mode.upper()
    style = {"RUNNING": "green", "ESTOPPED": "red", "STOPPED": "yellow"}.get(mode, "yellow")
    lines = [f"mode      [{style} b]{mode}[/]",
             f"reason    {view.reason[:22]}",
             f"e-stop    {'[red b]LATCHED[/]' if view.estop_latched else 'released'}",
             f"watchdog  {'[red b]TRIPPED[/]' if view.watchdog_tripped else 'ok'}"
             f" ({view.interventions.get('watchdog_trips', 0)} trips)",
             f"clipped   {view.interventions.get('clipped', 0)}   non-finite {view.interventions.get('non_finite', 0)}",
             f"latency   {fmt(view.latency_ms, '.1f')} ms (max {fmt(view.latency_max_ms, '.1f')})",
             f"commands  {view.commands_per_s:.1f}/s",
             f"robot     {'[red]silent[/]' if view.silent else 'publishing'}"]
    if view.policy:
        lines.append(f"policy    {Path(view.policy).name[:22]}")
    return "\n".join(lines)


class RobotsScreen(Screen):
    """One robot's topics: joints, last command, shield state; the e-stop."""

    BINDINGS = [Binding("R", "reset", "Reset e-stop", tooltip="reset e-stop (asks)"),
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
                yield Button("E-STOP  (e)", id="estop", variant="error")
                yield Button("Reset e-stop… (R)", id="reset")
        yield Footer()

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

    @on(Button.Pressed, "#reset")
    def _reset(self) -> None:
        self.action_reset()

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

    def action_reset(self) -> None:
        if self.app.link is None:
            self.notify("no robot connected", severity="error")
            return

        def confirmed(yes: bool | None) -> None:
            if yes and self.app.link is not None:
                try:
                    self.app.link.reset()
                except RobotError as err:
                    self.notify(str(err), severity="error")
                    return
                self.notify("signed release and arm sent")

        self.app.push_screen(ConfirmScreen("Reset the e-stop? The policy may start moving the robot again."),
                             confirmed)


# -- policies ------------------------------------------------------------------------
