"""The Policies screen: exported ONNX files with their spec; promote a run or a file to the robot."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from steer.ops.console import ConsoleError
from steer.ops.console.dialogs import ConfirmScreen, PickRunScreen
from steer.ops.console.policies import PolicyFile, check_on_robot, promote_run, scan_policies, sha256_file
from steer.ops.console.text import short_path
from steer.ops.run import checkpoints, scan_runs
from steer.robot.errors import RobotError
from steer.robot.spec import SPEC_FORMAT


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
            text = f"{short_path(f.path)}\n[red]{f.error}[/]"
        else:
            s = f.spec
            text = (f"{short_path(f.path)}  ({f.size_bytes / 1e3:.0f} kB)\n"
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
