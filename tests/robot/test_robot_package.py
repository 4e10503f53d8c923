"""The ament_python package files and the launch files (no ROS here: parsed and exercised with stubs)."""

import configparser
import importlib.util
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_package_xml_and_setup_files():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    assert pkg.get("format") == "3" and pkg.findtext("name") == "steer"
    assert pkg.find("export").findtext("build_type") == "ament_python"
    deps = {d.text for d in pkg.findall("exec_depend")}
    assert {"rclpy", "launch_ros", "sensor_msgs", "std_msgs", "diagnostic_msgs"} <= deps
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/steer" and cfg["install"]["install_scripts"] == "$base/lib/steer"
    assert (ROOT / "resource" / "steer").is_file()


def test_setup_py_installs_ament_marker_and_launch_files(monkeypatch):
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(ROOT)
    spec = importlib.util.spec_from_file_location("steer_setup", ROOT / "setup.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    files = dict(captured["data_files"])
    assert files["share/ament_index/resource_index/packages"] == ["resource/steer"]
    assert sorted(files["share/steer/launch"]) == ["launch/policy.launch.py", "launch/sim_robot.launch.py"]
    assert all((ROOT / f).is_file() for fs in files.values() for f in fs)


def _stub_launch(monkeypatch):
    """Minimal stand-ins for the launch and launch_ros modules, recording what a file builds."""
    class Recorder:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration(Recorder):
        def perform(self, context):
            return context.launch_configurations[self.args[0]]

    launch = types.ModuleType("launch")
    launch.LaunchDescription = Recorder
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument, actions.OpaqueFunction = Recorder, Recorder
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = Recorder
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
                      "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)


SAMPLE = {"policy": "/tmp/p.onnx", "limits": "/tmp/limits.yaml", "rate_hz": "50.0", "namespace": "arm1",
          "joint_state_topic": "js", "controller": "vel_ctrl", "estop_topic": "stop", "safety_topic": "safe",
          "operator_command_topic": "operator",
          "bag_dir": "/tmp/bags", "transport": "dds", "task": "steer/PlanarPush-v0", "episodes": "3", "seed": "7", "rt_priority": "30",
          "reset_mode": "operator"}


LAUNCH_FILES = {"policy.launch.py": ("run", "RobotRunConfig"), "sim_robot.launch.py": ("sim", "RobotSimConfig")}
"""Every launch file, with the `steer robot` command and the config class its arguments must map to."""


def _load_launch(monkeypatch, launch_file):
    _stub_launch(monkeypatch)
    spec = importlib.util.spec_from_file_location(launch_file.replace(".", "_"), ROOT / "launch" / launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("launch_file, command, config_name", [(k, *v) for k, v in LAUNCH_FILES.items()])
def test_launch_arguments_map_to_real_cli_options(monkeypatch, launch_file, command, config_name):
    import tyro

    from steer.ops import robot_cmd

    module = _load_launch(monkeypatch, launch_file)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = [e.args[0] for e in entities if "default_value" in e.kwargs]
    assert declared == list(module.ARGUMENTS)
    setup = next(e for e in entities if "function" in e.kwargs).kwargs["function"]
    context = types.SimpleNamespace(launch_configurations={k: SAMPLE[k] for k in declared})
    (node,) = setup(context)
    assert node.kwargs["package"] == "steer" and node.kwargs["executable"] == "steer"
    args = node.kwargs["arguments"]
    assert args[:2] == ["robot", command] and len(args) == 2 + 2 * len(declared)
    # Every launch argument becomes an option that the CLI parses into the field of the same name.
    config_type = getattr(robot_cmd, config_name)
    cfg = tyro.cli(config_type, args=args[2:])  # as steer.ops.cli parses it
    flat = vars(cfg)
    for name in declared:
        assert str(flat[name]) == SAMPLE[name], name
    # Empty values leave the option out, so the CLI default applies.
    (node,) = setup(types.SimpleNamespace(launch_configurations={k: "" for k in declared}))
    assert node.kwargs["arguments"] == ["robot", command]


def test_every_launch_file_is_checked_and_its_usage_line_parses(monkeypatch):
    import tyro

    from steer.ops import robot_cmd

    # A launch file added without an entry above would escape the mapping test.
    assert sorted(p.name for p in (ROOT / "launch").glob("*.launch.py")) == sorted(LAUNCH_FILES)
    for launch_file, (command, config_name) in LAUNCH_FILES.items():
        module = _load_launch(monkeypatch, launch_file)
        # The docstring's example, `ros2 launch steer <file> name:=value ...`, must work as written.
        usage = re.search(r"ros2 launch steer (\S+)((?: \w+:=\S+)+)", module.__doc__ or "")
        assert usage is not None and usage.group(1) == launch_file, launch_file
        values = dict(arg.split(":=", 1) for arg in usage.group(2).split())
        assert set(values) <= set(module.ARGUMENTS), (launch_file, sorted(set(values) - set(module.ARGUMENTS)))
        args = module.command_arguments(values)
        assert args[:2] == ["robot", command]
        cfg = tyro.cli(getattr(robot_cmd, config_name), args=args[2:])
        assert {k: str(vars(cfg)[k]) for k in values} == values, launch_file


def _copy_project(src: Path) -> Path:
    """The files a build reads, copied to ``src`` (an in-tree build would leave build/ in the checkout)."""
    import shutil

    src.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "setup.cfg", "package.xml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for name in ("resource", "launch", "robot", "agent", "sim", "driving", "ops"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _colcon() -> str | None:
    """colcon from $STEER_COLCON, the environment `make test` creates, or PATH."""
    import os
    import shutil

    for candidate in (os.environ.get("STEER_COLCON"), str(ROOT / ".venv-colcon" / "bin" / "colcon"),
                      shutil.which("colcon")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_colcon_build_installs_launch_files_config_and_the_steer_entry_point(tmp_path):
    import os

    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed: `make test` installs it into .venv-colcon (pip install colcon-core "
                    "colcon-ros colcon-python-setup-py catkin_pkg), or set STEER_COLCON")
    workspace = tmp_path / "ws"
    _copy_project(workspace / "src" / "steer")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run([colcon, "build", "--event-handlers", "console_direct+"], cwd=workspace, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]

    install = workspace / "install" / "steer"
    for name in ("policy.launch.py", "sim_robot.launch.py"):
        assert (install / "share/steer/launch" / name).read_bytes() == (ROOT / "launch" / name).read_bytes()
    assert (install / "share/steer/config/planar_push.yaml").read_bytes() == \
        (ROOT / "robot/config/planar_push.yaml").read_bytes()
    assert (install / "share/steer/package.xml").is_file()
    assert (install / "share/ament_index/resource_index/packages/steer").is_file()
    assert (workspace / "install" / "setup.sh").is_file()
    # Where `ros2 run steer steer` and the launch files look for it (setup.cfg).
    script = install / "lib" / "steer" / "steer"
    assert os.access(script, os.X_OK)
    (site,) = install.glob("lib/python3*/site-packages")
    run_env = dict(env, PYTHONPATH=str(site))
    # The entry point runs and imports steer from the workspace's install/, not from this checkout.
    help_out = subprocess.run([sys.executable, str(script), "robot", "sim", "--help"], env=run_env, capture_output=True,
                              text=True, timeout=120)
    assert help_out.returncode == 0, help_out.stderr[-2000:]
    assert "--domain-id" in help_out.stdout
    where = subprocess.run([sys.executable, "-c", "import steer.robot.sim_robot as m; print(m.__file__)"],
                           env=run_env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr


@pytest.mark.slow
def test_pip_still_builds_the_wheel_with_the_ament_files(tmp_path):
    src = _copy_project(tmp_path / "src")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import zipfile

    (wheel,) = tmp_path.glob("steer_rl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("data/share/steer/launch/policy.launch.py") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
