"""Exported policies for the console: ONNX files with their spec, and promotion.

Promoting a run exports its checkpoint to ``<policies>/<run>-<time>.onnx``, loads the file
with the robot runtime's own checks (:class:`steer.robot.onnx_policy.OnnxPolicy` against the
robot config) and only then hands it to the robot (see :mod:`steer.ops.console.robot`). The
console's policies folder is the robot's policies directory (or a copy of it kept in sync): a
promotion names the file relative to it. A file exported elsewhere is added (copied in) first.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from steer.ops.console import ConsoleError
from steer.robot.promotion import file_sha256 as sha256_file  # noqa: F401  (the console hashes what it promotes)
from steer.robot.spec import PolicySpec, WireError


@dataclass(frozen=True)
class PolicyFile:
    """One ONNX file and what its metadata says."""

    path: Path
    size_bytes: int
    modified: float
    spec: PolicySpec | None
    """The spec, read as the robot runtime reads it (None when missing or invalid)."""
    error: str = ""
    """Why the spec could not be read (empty when it could)."""

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> dict[str, str]:
        """Short text fields for the table."""
        s = self.spec
        if s is None:
            return {"kind": "?", "task": "", "io": "?", "rate": "?", "sha": "", "run": ""}
        return {"kind": s.kind, "task": s.task.split("/")[-1], "io": f"{s.obs_dim}→{s.chunk_len}x{s.action_dim}",
                "rate": f"{s.control_rate_hz:g} Hz", "sha": s.weights_sha256[:8], "run": Path(s.source_run).name}


def read_spec(path: Path) -> tuple[PolicySpec | None, str]:
    """(spec, error) of an ONNX file; reads only the metadata when the onnx package is there."""
    path = Path(path)
    try:
        try:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            meta = {p.key: p.value for p in model.metadata_props}
        except ImportError:
            import onnxruntime as ort

            meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta() \
                .custom_metadata_map
    except Exception as err:  # noqa: BLE001 - protobuf and onnxruntime raise private types
        return None, f"not a readable ONNX file ({type(err).__name__})"
    try:
        return PolicySpec.from_metadata(meta), ""
    except WireError as err:
        return None, str(err)


def scan_policies(*folders: Path) -> list[PolicyFile]:
    """ONNX files directly in each folder and in its run directories (``<folder>/*/*.onnx``), newest first."""
    seen: set[Path] = set()
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in [*folder.glob("*.onnx"), *folder.glob("*/*.onnx")]:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            spec, error = read_spec(path)
            st = path.stat()
            out.append(PolicyFile(path, st.st_size, st.st_mtime, spec, error))
    return sorted(out, key=lambda p: (-p.modified, p.name))


def default_exporter(run: Path, out: Path) -> dict:
    """``steer export`` without the parity check (the runtime checks below still run)."""
    from steer.agent.export import export_run

    return export_run(run, out)


def check_on_robot(path: Path, robot_config) -> None:
    """Load the file as the robot node would and run its checks; one sentence when it is refused."""
    from steer.robot.errors import RobotError
    from steer.robot.onnx_policy import OnnxPolicy

    try:
        OnnxPolicy(path, robot=robot_config)
    except RobotError as err:
        raise ConsoleError(f"the robot runtime refuses it: {err}") from None


def promote_run(run: Path, policies_dir: Path, robot_config, exporter: Callable[[Path, Path], dict] = default_exporter,
                now: float | None = None) -> PolicyFile:
    """Export ``run`` into ``policies_dir`` and check it against the robot; returns the new file.

    A file the runtime refuses is deleted, so the folder only holds policies a robot can run.
    """
    run = Path(run)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    policies_dir = Path(policies_dir)
    policies_dir.mkdir(parents=True, exist_ok=True)
    out = policies_dir / f"{run.name}-{stamp}.onnx"
    try:
        exporter(run, out)
    except Exception as err:  # noqa: BLE001 - export errors are shown, not raised into the UI
        if getattr(err, "user_facing", False):
            raise ConsoleError(f"export of {run.name} failed: {err}") from None
        raise
    try:
        check_on_robot(out, robot_config)
    except ConsoleError:
        out.unlink(missing_ok=True)
        raise
    spec, error = read_spec(out)
    st = out.stat()
    return PolicyFile(out, st.st_size, st.st_mtime, spec, error)


def promote_name(path: Path, policies_dir: Path) -> str:
    """``path`` relative to the policies folder, as a signed promotion names it."""
    try:
        return Path(path).resolve().relative_to(Path(policies_dir).resolve()).as_posix()
    except ValueError:
        raise ConsoleError(f"{Path(path).name} is not in the policies folder {policies_dir}; "
                           "add it first (+).") from None


def add_policy(source: Path, policies_dir: Path) -> PolicyFile:
    """Copy an ONNX file exported elsewhere into the policies folder, once its spec reads.

    Refuses a missing file, a file without a valid spec, and a different file of the same name.
    """
    source = Path(source).expanduser()
    if not source.is_file():
        raise ConsoleError(f"{source} is not a file; give the path of an exported .onnx policy.")
    spec, error = read_spec(source)
    if spec is None:
        raise ConsoleError(f"{source.name} is not a steer policy: {error}")
    policies_dir = Path(policies_dir)
    policies_dir.mkdir(parents=True, exist_ok=True)
    out = policies_dir / source.name
    if out.resolve() != source.resolve():
        if out.exists() and sha256_file(out) != sha256_file(source):
            raise ConsoleError(f"the policies folder already holds a different {out.name}; rename one of them.")
        tmp = out.with_name(f".{out.name}.part")
        shutil.copyfile(source, tmp)
        tmp.replace(out)  # the robot never sees half a file
    st = out.stat()
    return PolicyFile(out, st.st_size, st.st_mtime, spec, "")
