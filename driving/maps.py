"""Map files: a SUMO network (``.net.xml``) or an OpenDRIVE town (``.xodr``) as a :class:`RoadMap`.

SUMO networks import through sumolib (:mod:`steer.driving.sumo_import`). OpenDRIVE files are read by
SUMO's ``netconvert`` (a maintained OpenDRIVE reader: roads, lanes, junctions with their connecting
roads, and the traffic signals with their controllers as traffic-light programs), and the network it
writes imports like any other. ``carla.Map`` reads the same file for route planning and for checking
the import against CARLA's own reading (see the tests).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile

from steer.driving.roadmap import RoadMap

MAP_SUFFIXES = (".net.xml", ".xodr")
"""File kinds :func:`load_map` reads."""


class MapFileError(ValueError):
    """A map file is missing, of an unsupported kind, or cannot be read (one sentence for the user)."""

    user_facing = True


def map_kind(path: str) -> str:
    """``"sumo"`` or ``"opendrive"`` from the file name, or a :class:`MapFileError`."""
    p = str(path)
    if not os.path.isfile(p):
        raise MapFileError(f"map file {p!r} does not exist; pass a SUMO .net.xml or an OpenDRIVE .xodr file.")
    if p.endswith(".net.xml"):
        return "sumo"
    if p.endswith(".xodr"):
        return "opendrive"
    raise MapFileError(f"map file {p!r} is not a SUMO .net.xml or an OpenDRIVE .xodr file.")


def netconvert_binary() -> str:
    """Path of SUMO's ``netconvert`` (from eclipse-sumo, else from PATH)."""
    try:
        import sumo

        exe = os.path.join(sumo.SUMO_HOME, "bin", "netconvert")
        if os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("netconvert")
    if exe is None:
        raise MapFileError("reading OpenDRIVE needs SUMO's netconvert; install steer-rl with the 'driving' extra.")
    return exe


def opendrive_to_sumo(xodr: str, out_dir: str | None = None) -> str:
    """Convert an OpenDRIVE file to a SUMO network with netconvert; returns the ``.net.xml`` path.

    Signals become traffic lights grouped by their OpenDRIVE controllers; turnarounds are left out
    (no car turns on the spot). The result is cached by the file's content hash in ``out_dir``.
    """
    with open(xodr, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    out_dir = out_dir or os.path.join(tempfile.gettempdir(), "steer-opendrive")
    os.makedirs(out_dir, exist_ok=True)
    net = os.path.join(out_dir, f"{digest}.net.xml")
    if os.path.exists(net):
        return net
    tmp = net + f".{os.getpid()}.tmp.net.xml"
    cmd = [netconvert_binary(), "--opendrive-files", xodr, "--opendrive.signal-groups", "true",
           "--opendrive.internal-shapes", "true", "--no-turnarounds", "true", "--no-warnings", "true",
           "--output-file", tmp]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 or not os.path.exists(tmp):
        msg = (out.stderr or out.stdout).strip().splitlines()
        raise MapFileError(f"OpenDRIVE file {xodr!r} cannot be read ({msg[-1] if msg else 'netconvert failed'}).")
    os.replace(tmp, net)
    return net


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float, min_radius: float):
    from steer.driving.sumo_import import SumoNetworkError, import_sumo_net

    net = path if map_kind(path) == "sumo" else opendrive_to_sumo(path)
    try:
        return import_sumo_net(net, min_radius)
    except SumoNetworkError as err:
        raise MapFileError(str(err)) from err


def load_map_file(path: str, min_radius: float | None = None):
    """The imported map of a ``.net.xml`` or ``.xodr`` file as a :class:`~steer.driving.sumo_import.SumoMap`
    (the road map plus the SUMO ids behind it; cached per file and modification time). Connections
    tighter than ``min_radius`` metres are left out (default: the turning circle of the default car)."""
    if min_radius is None:
        from steer.driving.routes import min_turn_radius
        from steer.driving.simulator import SimConfig

        min_radius = min_turn_radius(SimConfig.wheelbase, SimConfig.max_steer)
    map_kind(path)
    return _load(os.path.abspath(str(path)), os.path.getmtime(path), float(min_radius))


def load_map(path: str, min_radius: float | None = None) -> RoadMap:
    """The :class:`RoadMap` of a ``.net.xml`` or ``.xodr`` file (see :func:`load_map_file`)."""
    return load_map_file(path, min_radius).roadmap
