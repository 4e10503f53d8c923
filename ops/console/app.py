"""The operator console: runs, robots and policies in one terminal app (Textual).

Four screens, switched with 1 / 2 / 3 / 4: **Runs** (every run directory with its status, live
metric plots, config, checkpoints; start, stop, resume, compare), **Robots** (one robot's
topics over DDS: joints, last command, shield mode, interventions, latency, watchdog; the
e-stop), **Policies** (exported ONNX files; promote a run to the robot) and **Adapt** (a learner
steering the robot's policy: its session, success against the gate's threshold; start, pause,
stop, outcome marks, take over). ``e`` sends the
e-stop from every screen, over the help and under every dialog; ``ctrl+e`` also from inside a
text field (see :mod:`steer.ops.console.estop`). The widgets are thin: what they show comes from
:mod:`steer.ops.run` (run directories), :mod:`steer.ops.console.jobs` (child processes),
:mod:`steer.ops.console.robot` and :mod:`steer.ops.console.policies`, which tests drive
without a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Static

from steer.ops.console import ConsoleError
from steer.ops.console.adapt_screen import AdaptScreen
from steer.ops.console.dialogs import ConfirmScreen
from steer.ops.console.estop import ESTOP_BINDINGS, ESTOP_HELP, typing_in_a_field
from steer.ops.console.jobs import STEER, RunJobs
from steer.ops.console.policies_screen import PoliciesScreen
from steer.ops.console.robot import RobotLink, RobotView
from steer.ops.console.robot_screen import RobotsScreen
from steer.ops.console.runs_screen import RunsScreen


@dataclass
class ConsoleSettings:
    """What the console watches and where it connects (built from ``steer console``'s options)."""

    runs: Path = Path("runs")
    policies: Path = Path("policies")
    robot_config: object | None = None
    """A :class:`steer.robot.config.RobotConfig`; None: no robot until one is connected with ``o``."""
    domain_id: int = 0
    loopback: bool = True
    refresh_s: float = 1.0
    """How often the runs are rescanned and the plots redrawn."""
    robot_refresh_s: float = 0.1
    steer: tuple[str, ...] = STEER
    exporter: object | None = None
    """``f(run, out) -> spec`` used by promote (default: ``steer export``'s)."""
    operator_key: object | None = None
    """The operator's Ed25519 private key that signs release, arm and promote (None: e-stop only)."""
    operator_key_error: str = ""
    """Why there is no key (shown when the operator asks to release, arm or promote)."""


class HelpScreen(ModalScreen[None]):
    """Every key binding of the console, gathered from the app and its screens."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        left, right = help_columns()
        with Horizontal(classes="dialog", id="help"):
            yield Static(left, id="help-left")
            yield Static(right, id="help-right")

    def action_close(self) -> None:
        self.dismiss(None)


def _binding_rows(bindings) -> list[tuple[str, str]]:
    rows = []
    for b in bindings:
        if isinstance(b, Binding):
            keys = ", ".join({"question_mark": "?", "plus": "+"}.get(k, k) for k in b.key.split(","))
            rows.append((keys, b.tooltip or b.description))
    return rows


def binding_table() -> list[tuple[str, str, str]]:
    """(screen, keys, action) of every key binding of the console."""
    rows = []
    for title, bindings in (("everywhere", ConsoleApp.BINDINGS), ("Runs", RunsScreen.BINDINGS),
                            ("dialogs", ConfirmScreen.BINDINGS), ("Robots", RobotsScreen.BINDINGS),
                            ("Policies", PoliciesScreen.BINDINGS), ("Adapt", AdaptScreen.BINDINGS)):
        rows += [(title, keys, desc) for keys, desc in _binding_rows(bindings)]
    return rows


def help_columns() -> tuple[str, str]:
    """The help screen's two columns (every binding, by screen)."""
    cols: list[list[str]] = [[], []]
    last = None
    for title, keys, desc in binding_table():
        col = cols[0] if title in ("everywhere", "Runs", "dialogs") else cols[1]
        if title != last:
            col.append(f"[b]{title}[/b]")
            last = title
        col.append(f" {keys:<9} {desc}")
    cols[1] += ["", ESTOP_HELP]
    return "\n".join(cols[0]), "\n".join(cols[1])


# -- the app -------------------------------------------------------------------------

class ConsoleApp(App):
    """``steer console``."""

    CSS_PATH = "console.tcss"
    ENABLE_COMMAND_PALETTE = False
    TITLE = "steer console"
    MODES = {"runs": RunsScreen, "robots": RobotsScreen, "policies": PoliciesScreen, "adapt": AdaptScreen}
    BINDINGS = [Binding("1", "switch_mode('runs')", "Runs", tooltip="Runs screen"),
                Binding("2", "switch_mode('robots')", "Robots", tooltip="Robots screen"),
                Binding("3", "switch_mode('policies')", "Policies", tooltip="Policies screen"),
                Binding("4", "switch_mode('adapt')", "Adapt", tooltip="Adapt screen"),
                *ESTOP_BINDINGS,
                Binding("question_mark", "help", "Help", tooltip="this help"),
                Binding("q", "quit", "Quit", tooltip="quit (runs go on)")]

    def __init__(self, settings: ConsoleSettings | None = None, link: RobotLink | None = None):
        super().__init__()
        self.settings = settings or ConsoleSettings()
        self.jobs = RunJobs(self.settings.runs, self.settings.steer)
        self.link = link
        self.link_error = ""
        self.promoted: Path | None = None
        self.promoted_sha256 = ""
        self._idle_view = RobotView(connected=False)

    def on_mount(self) -> None:
        s = self.settings
        if self.link is None and s.robot_config is not None:
            try:
                self.link = RobotLink(s.robot_config, s.domain_id, s.loopback, key=s.operator_key,
                                      key_error=s.operator_key_error)
            except Exception as err:  # noqa: BLE001 - DDS errors are shown, the runs screen still works
                self.link_error = f"cannot connect to DDS domain {s.domain_id}: {err}"
        if self.link is not None:
            self.set_interval(s.robot_refresh_s, self._poll_robot)
        self.switch_mode("runs")

    def connect_robot(self, address: str) -> None:
        """Watch the robot at ``DOMAIN_ID [NAMESPACE]`` instead of the current one."""
        parts = address.split()
        if not parts or not parts[0].isdigit() or int(parts[0]) > 232 or len(parts) > 2:
            raise ConsoleError(f"{address!r} is not DOMAIN_ID [NAMESPACE]; e.g. `7` or `7 robot1`.")
        s = self.settings
        if s.robot_config is None:
            from steer.robot.config import load_robot_config

            s.robot_config = load_robot_config()
        config = s.robot_config.replace(namespace=parts[1] if len(parts) == 2 else "")
        try:
            link = RobotLink(config, int(parts[0]), s.loopback, key=s.operator_key, key_error=s.operator_key_error)
        except Exception as err:  # noqa: BLE001 - DDS errors become one sentence
            raise ConsoleError(f"cannot join DDS domain {parts[0]} ({err}).") from None
        old, self.link = self.link, link
        s.robot_config, s.domain_id = config, link.domain_id
        if old is not None:
            old.close()
        else:
            self.set_interval(s.robot_refresh_s, self._poll_robot)

    def _poll_robot(self) -> None:
        if self.link is not None:
            self.link.poll()

    def robot_view(self) -> RobotView:
        """The newest view of the connected robot (a disconnected one when there is none)."""
        return self.link.view if self.link is not None else self._idle_view

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A plain e in a text field is a letter; the key then reaches the field (ctrl+e still stops).
        if action == "estop_key" and typing_in_a_field(self):
            return False
        return True

    def action_estop(self) -> None:
        """Publish the latched e-stop now (before anything else: the notice comes after)."""
        if self.link is None:
            self.notify("E-STOP: no robot connected", severity="error")
            return
        self.link.estop()
        self.notify("E-STOP sent (latched); release it with R on the Robots screen", severity="error",
                    title="E-STOP")

    def action_estop_key(self) -> None:
        """``e``: the e-stop (disabled while a text field has focus, see :meth:`check_action`)."""
        self.action_estop()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_unmount(self) -> None:
        # Runs started here keep running (they are training jobs); only the DDS endpoints go.
        if self.link is not None:
            self.link.close()
