"""The operator console: runs, robots and policies in one terminal app (Textual).

Three screens, switched with 1 / 2 / 3: **Runs** (every run directory with its status, live
metric plots, config, checkpoints; start, stop, resume, compare), **Robots** (one robot's
topics over DDS: joints, last command, shield mode, interventions, latency, watchdog; the
e-stop) and **Policies** (exported ONNX files; promote a run to the robot). ``e`` sends the
e-stop from every screen. The widgets are thin: what they show comes from
:mod:`steer.ops.console_runs`, :mod:`steer.ops.console_robot` and
:mod:`steer.ops.console_policies`, which tests drive without a terminal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (Button, DataTable, Footer, Header, Input, Label, OptionList, Static, TabbedContent,
                             TabPane)
from textual_plotext import PlotextPlot

from steer.ops.console_policies import PolicyFile, check_on_robot, promote_run, scan_policies, sha256_file
from steer.ops.console_robot import RobotLink, RobotView
from steer.ops.console_runs import (STEER, ConsoleError, MetricTail, RunInfo, RunJobs, checkpoints, config_lines,
                                    run_config, scan_runs)
from steer.robot.errors import RobotError
from steer.robot.spec import SPEC_FORMAT


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


def _short(path: Path) -> str:
    """A path relative to the working directory when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


# -- dialogs -----------------------------------------------------------------------

class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y`` / ``n`` or the buttons."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", tooltip="yes"),
                Binding("n,escape", "answer(False)", "No", tooltip="no")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no", variant="primary")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class CommandScreen(ModalScreen[str | None]):
    """Asks for a ``steer`` command line to start."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Start a run: steer …")
            yield Input(placeholder="dsrl --policy runs/bc --name dsrl2", id="command")
            yield Label("enter: start · escape: cancel (the e key types here: escape, then e)", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConnectScreen(ModalScreen[str | None]):
    """Asks for the DDS domain id and namespace of the robot to watch."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Connect to a robot: DOMAIN_ID [NAMESPACE]")
            yield Input(value=self.current, id="robot-address")
            yield Label("enter: connect · escape: cancel", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickRunScreen(ModalScreen[str | None]):
    """Pick a run with checkpoints to promote."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Promote which run? (export + make it the robot's policy)")
            yield OptionList(*self.names, id="pick")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.names[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


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
            keys = ", ".join("?" if k == "question_mark" else k for k in b.key.split(","))
            rows.append((keys, b.tooltip or b.description))
    return rows


def binding_table() -> list[tuple[str, str, str]]:
    """(screen, keys, action) of every key binding of the console."""
    rows = []
    for title, bindings in (("everywhere", ConsoleApp.BINDINGS), ("Runs", RunsScreen.BINDINGS),
                            ("Robots", RobotsScreen.BINDINGS), ("Policies", PoliciesScreen.BINDINGS),
                            ("dialogs", ConfirmScreen.BINDINGS)):
        rows += [(title, keys, desc) for keys, desc in _binding_rows(bindings)]
    return rows


def help_columns() -> tuple[str, str]:
    """The help screen's two columns (every binding, by screen)."""
    cols: list[list[str]] = [[], []]
    last = None
    for title, keys, desc in binding_table():
        col = cols[0] if title in ("everywhere", "Runs") else cols[1]
        if title != last:
            col.append(f"[b]{title}[/b]")
            last = title
        col.append(f" {keys:<9} {desc}")
    cols[1] += ["", "[b]tables[/b]", " up, down  select a row", " tab       next widget"]
    return "\n".join(cols[0]), "\n".join(cols[1])


# -- runs ----------------------------------------------------------------------------

class RunsScreen(Screen):
    """Every run under the runs folder; the highlighted one's plots, config and checkpoints."""

    BINDINGS = [Binding("s", "start", "Start", tooltip="start a steer command"),
                Binding("x", "stop", "Stop", tooltip="stop the run (asks)"),
                Binding("r", "resume", "Resume", tooltip="resume from checkpoint"),
                Binding("m", "next_metric", "Metric", tooltip="plot the next metric"),
                Binding("c", "compare", "Compare", tooltip="mark run to compare")]

    def __init__(self):
        super().__init__()
        self.runs: dict[str, RunInfo] = {}
        self.selected: str | None = None
        self.compare_with: str | None = None
        self.metric: str | None = None
        self.tails: dict[str, MetricTail] = {}
        self.plotted: list[str] = []
        """Runs whose curve of ``metric`` is on the plot now."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with TabbedContent(id="run-tabs"):
            with TabPane("Plot", id="tab-plot"):
                yield PlotextPlot(id="plot")
            with TabPane("Config", id="tab-config"):
                yield VerticalScroll(Static(id="config"))
            with TabPane("Checkpoints", id="tab-ckpt"):
                yield DataTable(id="checkpoints", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "steer console · Runs"
        table = self.query_one("#runs", DataTable)
        table.add_columns("run", "status", "kind", "step", "score", "SPS")
        self.query_one("#checkpoints", DataTable).add_columns("checkpoint", "size", "written")
        self.show_runs(scan_runs(self.app.settings.runs))  # the first frame already has the runs
        self.set_interval(self.app.settings.refresh_s, self.refresh_runs)

    # -- data --
    def refresh_runs(self) -> None:
        """Rescan the runs folder off the UI thread (the e-stop key must never wait for a disk)."""
        self._scan()

    @work(thread=True, exclusive=True, group="scan")
    def _scan(self) -> None:
        infos = scan_runs(self.app.settings.runs)
        try:
            self.app.call_from_thread(self.show_runs, infos)
        except RuntimeError:  # the app closed meanwhile
            pass

    def show_runs(self, infos: list[RunInfo]) -> None:
        """Put a scan into the table, keeping the operator's selection."""
        for job in self.app.jobs.reap():
            if job.returncode and not job.stopped_by_operator:
                self.notify(f"{' '.join(job.argv[len(self.app.jobs.steer):])[:40]} exited with {job.returncode}: "
                            f"{job.last_line()[:120]}", severity="error", timeout=15)
        self.runs = {r.name: r for r in infos}
        table = self.query_one("#runs", DataTable)
        keep = self.selected
        # Rebuilding the table moves its cursor; those moves are not the operator's selection.
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            for r in infos:
                score = f"{r.score_label} {r.score:.2f}" if r.score is not None else "-"
                mark = "* " if r.name == self.compare_with else ""
                table.add_row(mark + r.name[:22], r.status, r.kind_label, f"{r.step:,}", score,
                              _fmt(r.sps, ".0f"), key=r.name)
            if keep in self.runs:
                table.move_cursor(row=table.get_row_index(keep), animate=False)
        if keep not in self.runs and infos:
            self.select(infos[0].name)
        elif keep in self.runs:
            self.show_details()
        self.redraw_plot()

    def tail(self, name: str) -> MetricTail:
        if name not in self.tails:
            self.tails[name] = MetricTail(self.app.settings.runs / name / "metrics.jsonl")
        t = self.tails[name]
        t.poll()
        return t

    def select(self, name: str) -> None:
        if name == self.selected:
            return
        self.selected = name
        if name not in self.runs:
            return
        self._pick_metric()
        self.show_details()
        self.redraw_plot()

    def _pick_metric(self) -> None:
        """Keep the plotted metric if the selected run has it, else its score (or its first metric)."""
        keys = self.tail(self.selected).keys() if self.selected else []
        if self.metric not in keys:
            preferred = [k for k in ("charts/route_completion", "charts/success_rate", "eval/success_rate",
                                     "charts/episodic_return", "losses/diffusion") if k in keys]
            self.metric = (preferred or keys or [None])[0]

    def show_details(self) -> None:
        """The selected run's config and checkpoints (checkpoints appear while it trains)."""
        run = self._current()
        if run is None:
            return
        lines = config_lines(run_config(run.path), 76)
        self.query_one("#config", Static).update("\n".join(lines) or "no config.json")
        ck = self.query_one("#checkpoints", DataTable)
        rows = [(c.name, f"{c.size_bytes / 1e6:.2f} MB", time.strftime("%Y-%m-%d %H:%M", time.localtime(c.modified)))
                for c in checkpoints(run.path)]
        if [tuple(ck.get_row_at(i)) for i in range(ck.row_count)] != rows:
            ck.clear()
            for row in rows:
                ck.add_row(*row)

    def redraw_plot(self) -> None:
        plot = self.query_one("#plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if self.metric is None:  # the selected run had no metrics yet when it was selected
            self._pick_metric()
        names = [n for n in (self.selected, self.compare_with) if n and n in self.runs]
        drawn: list[str] = []
        for name in dict.fromkeys(names):
            if self.metric is None:
                break
            steps, values = self.tail(name).series(self.metric)
            if steps:
                plt.plot(steps, values, label=name[:16], marker="braille")
                drawn.append(name)
        plt.title(f"{self.metric or 'no metrics yet'}" + (f" · {self.selected} vs {self.compare_with}"
                                                           if self.compare_with and self.compare_with != self.selected
                                                           else ""))
        self.plotted = drawn
        plot.refresh()

    # -- events and actions --
    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.select(event.row_key.value)

    def _current(self) -> RunInfo | None:
        return self.runs.get(self.selected or "")

    def action_next_metric(self) -> None:
        if not self.selected:
            return
        keys = self.tail(self.selected).keys()
        if keys:
            i = keys.index(self.metric) + 1 if self.metric in keys else 0
            self.metric = keys[i % len(keys)]
            self.redraw_plot()

    def action_compare(self) -> None:
        """Mark the highlighted run as the one to compare with (again: unmark)."""
        if self.selected is None:
            return
        self.compare_with = None if self.compare_with == self.selected else self.selected
        self.show_runs(list(self.runs.values()))  # the marked run gets a "*" and the plot names both

    def action_start(self) -> None:
        def started(command: str | None) -> None:
            if not command:
                return
            try:
                job = self.app.jobs.start(command)
            except ConsoleError as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"started pid {job.process.pid}: steer {command}")

        self.app.push_screen(CommandScreen(), started)

    def action_stop(self) -> None:
        run = self._current()
        if run is None:
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                pid = self.app.jobs.stop(run)
            except ConsoleError as err:
                self.notify(str(err), severity="error")
                return
            self.notify(f"interrupted {run.name} (pid {pid}); resume it with r")

        self.app.push_screen(ConfirmScreen(f"Stop {run.name}? It can be resumed from its last checkpoint."),
                             confirmed)

    def action_resume(self) -> None:
        run = self._current()
        if run is None:
            return
        try:
            job = self.app.jobs.resume(run)
        except ConsoleError as err:
            self.notify(str(err), severity="error")
            return
        self.notify(f"resuming {run.name} (pid {job.process.pid})")


# -- robots --------------------------------------------------------------------------

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
             f"latency   {_fmt(view.latency_ms, '.1f')} ms (max {_fmt(view.latency_max_ms, '.1f')})",
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
        self.query_one("#command", Static).update(f"command {cmd}  ({_fmt(view.command_age_s, '.2f')} s ago)")
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

class PoliciesScreen(Screen):
    """Exported ONNX policies with their spec; promote a run or a file to the robot."""

    BINDINGS = [Binding("p", "promote_run", "Promote run", tooltip="export a run, promote"),
                Binding("a", "activate", "Activate file", tooltip="promote the ONNX file"),
                Binding("g", "rescan", "Rescan", tooltip="rescan ONNX files")]

    def __init__(self):
        super().__init__()
        self.files: dict[str, PolicyFile] = {}
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="policies", cursor_type="row", zebra_stripes=True)
        yield VerticalScroll(Static(id="spec"), id="spec-box")
        yield Static(id="active")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "steer console · Policies"
        self.query_one("#policies", DataTable).add_columns("file", "kind", "obs→act", "rate", "sha", "run")
        self.action_rescan()
        self.set_interval(0.5, self._show_active)

    def action_rescan(self) -> None:
        s = self.app.settings
        files = scan_policies(s.policies, s.runs)
        self.files = {str(f.path): f for f in files}
        table = self.query_one("#policies", DataTable)
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            self._fill(table, files)
            if self.selected in self.files:
                table.move_cursor(row=table.get_row_index(self.selected), animate=False)
        if files:
            self.show(self.selected if self.selected in self.files else str(files[0].path))
        self._show_active()

    def _fill(self, table: DataTable, files: list[PolicyFile]) -> None:
        for f in files:
            row = f.summary()
            table.add_row(f.name[:32], row["kind"] if not f.error else "[red]invalid[/]",
                          row["io"], row["rate"], row["sha"], row["run"][:12], key=str(f.path))

    def show(self, key: str) -> None:
        self.selected = key
        f = self.files.get(key)
        if f is None:
            return
        if f.error:
            text = f"{_short(f.path)}\n[red]{f.error}[/]"
        else:
            s = f.spec
            text = (f"{_short(f.path)}  ({f.size_bytes / 1e3:.0f} kB)\n"
                    f"obs     {', '.join(s.obs_names)}\n"
                    f"action  {', '.join(s.action_names)}  low {list(s.action_low)} high {list(s.action_high)}\n"
                    f"task {s.task}  chunk {s.chunk_len}  noise input {s.noise_input}  "
                    f"format {SPEC_FORMAT}\nsource  {s.source_run}\nweights {s.weights_sha256}")
        self.query_one("#spec", Static).update(text)

    def _show_active(self) -> None:
        app = self.app
        view = app.robot_view()
        promoted = app.promoted
        if app.link is None:
            text = "robot: not connected"
        elif promoted is None:
            text = f"robot policy: {Path(view.policy).name if view.policy else 'as started'}"
        else:
            confirmed = view.policy and Path(view.policy).resolve() == promoted.resolve()
            state = "[green]active[/]" if confirmed else (f"[red]refused: {view.promote_error}[/]"
                                                          if view.promote_error else "sent, waiting for the node")
            text = f"promoted {promoted.name}: {state}"
        self.query_one("#active", Static).update(text)

    @on(DataTable.RowHighlighted, "#policies")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.show(event.row_key.value)

    def action_activate(self) -> None:
        f = self.files.get(self.selected or "")
        if f is None:
            return
        if f.error:
            self.notify(f"{f.name}: {f.error}", severity="error")
            return
        self.app.push_screen(ConfirmScreen(f"Make {f.name} the robot's active policy?"),
                             lambda yes: yes and self._activate(f.path))

    @work(thread=True, exclusive=True, group="promote")
    def _activate(self, path: Path) -> None:
        """The runtime's checks on an existing file, off the UI thread, then the promotion."""
        s = self.app.settings
        try:
            if s.robot_config is None:
                raise ConsoleError("no robot config: cannot check the policy")
            check_on_robot(path, s.robot_config)
        except ConsoleError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        self.app.call_from_thread(self._send, path, sha256_file(path), None)

    def action_promote_run(self) -> None:
        names = [r.name for r in scan_runs(self.app.settings.runs) if checkpoints(r.path)]
        if not names:
            self.notify("no run with checkpoints to promote", severity="error")
            return

        def picked(name: str | None) -> None:
            if name:
                self.app.push_screen(ConfirmScreen(f"Export {name} and make it the robot's active policy?"),
                                     lambda yes: yes and self._promote(name))

        self.app.push_screen(PickRunScreen(names), picked)

    @work(thread=True, exclusive=True, group="promote")
    def _promote(self, name: str) -> None:
        s = self.app.settings
        kwargs = {"exporter": s.exporter} if s.exporter else {}
        self.app.call_from_thread(self.notify, f"exporting {name} …")
        if s.robot_config is None:
            self.app.call_from_thread(self.notify, "no robot config: cannot check the policy", severity="error")
            return
        try:
            f = promote_run(s.runs / name, s.policies, s.robot_config, **kwargs)
        except ConsoleError as err:
            self.app.call_from_thread(self.notify, str(err), severity="error")
            return
        self.app.call_from_thread(self._send, f.path, sha256_file(f.path), name)

    def _send(self, path: Path, sha256: str, run: str | None) -> None:
        """Publish a checked policy as the robot's active one."""
        app = self.app
        if app.link is None:
            self.notify(f"exported {path.name}; no robot connected to promote it to", severity="warning")
            self.action_rescan()
            return
        try:
            app.link.promote(path, sha256, run or "")
        except RobotError as err:
            self.notify(str(err), severity="error")
            return
        app.promoted = Path(path)
        self.notify(f"promoted {path.name}")
        self.action_rescan()


# -- the app -------------------------------------------------------------------------

class ConsoleApp(App):
    """``steer console``."""

    CSS_PATH = "console.tcss"
    ENABLE_COMMAND_PALETTE = False
    TITLE = "steer console"
    MODES = {"runs": RunsScreen, "robots": RobotsScreen, "policies": PoliciesScreen}
    BINDINGS = [Binding("1", "switch_mode('runs')", "Runs", tooltip="Runs screen"),
                Binding("2", "switch_mode('robots')", "Robots", tooltip="Robots screen"),
                Binding("3", "switch_mode('policies')", "Policies", tooltip="Policies screen"),
                Binding("e", "estop", "E-STOP (latched)", tooltip="E-STOP now (latched)"),
                Binding("question_mark", "help", "Help", tooltip="this help"),
                Binding("q", "quit", "Quit", tooltip="quit (runs go on)")]

    def __init__(self, settings: ConsoleSettings | None = None, link: RobotLink | None = None):
        super().__init__()
        self.settings = settings or ConsoleSettings()
        self.jobs = RunJobs(self.settings.runs, self.settings.steer)
        self.link = link
        self.link_error = ""
        self.promoted: Path | None = None
        self._idle_view = RobotView(connected=False)

    def on_mount(self) -> None:
        s = self.settings
        if self.link is None and s.robot_config is not None:
            try:
                self.link = RobotLink(s.robot_config, s.domain_id, s.loopback, key=s.operator_key)
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
            link = RobotLink(config, int(parts[0]), s.loopback, key=s.operator_key)
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

    def action_estop(self) -> None:
        """Publish the latched e-stop now."""
        if self.link is None:
            self.notify("E-STOP: no robot connected", severity="error")
            return
        self.link.estop()
        self.notify("E-STOP sent (latched); reset on the Robots screen", severity="error", title="E-STOP")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_unmount(self) -> None:
        # Runs started here keep running (they are training jobs); only the DDS endpoints go.
        if self.link is not None:
            self.link.close()
