"""Fixtures of the robot tests: ONNX policy factory, DDS domains on loopback, robot processes."""

import itertools
import os
import sys

import pytest

from robot_helpers import RobotProcesses, make_policy


@pytest.fixture
def policy_factory(tmp_path):
    """``policy_factory(name, **make_policy_kwargs) -> path``."""
    counter = itertools.count()

    def factory(name=None, **kwargs):
        return make_policy(tmp_path / (name or f"policy{next(counter)}.onnx"), **kwargs)

    return factory


_DOMAIN_BASE = {"gw0": 10, "gw1": 50}  # run_closed_loop picks 120..219 by default


@pytest.fixture
def dds_env(tmp_path_factory, request):
    """Environment for DDS processes: loopback-only Cyclone config and a domain id of this test alone.

    Each xdist worker draws ids from its own range, so two tests never share a domain.
    """
    from steer.robot.transport import LOOPBACK_CONFIG

    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    base = _DOMAIN_BASE.get(worker, 90)
    counter = request.config.__dict__.setdefault("_steer_domain_counter", itertools.count())
    domain = base + next(counter) % (10 if base == 90 else 40)
    xml = tmp_path_factory.getbasetemp() / "cyclonedds-loopback.xml"
    if not xml.exists():
        xml.write_text(LOOPBACK_CONFIG)
    env = dict(os.environ, CYCLONEDDS_URI=f"file://{xml}", PYTHONUNBUFFERED="1")
    os.environ["CYCLONEDDS_URI"] = env["CYCLONEDDS_URI"]
    return {"domain": domain, "env": env, "python": sys.executable}


@pytest.fixture
def robot_processes(dds_env, tmp_path):
    procs = RobotProcesses(dds_env, tmp_path)
    yield procs
    procs.stop_all()
