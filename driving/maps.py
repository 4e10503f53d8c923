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


def load_map_file(path: str, min_radius: float):
    """The imported map of a ``.net.xml`` or ``.xodr`` file as a :class:`~steer.driving.sumo_import.SumoMap`
    (the road map plus the SUMO ids behind it; cached per file and modification time). Connections
    tighter than ``min_radius`` metres are left out (the simulator passes its car's turning circle,
    :func:`steer.driving.simulator.map_min_radius`, so that turnarounds go but every turn some car can
    make stays for traffic)."""
    map_kind(path)
    return _load(os.path.abspath(str(path)), os.path.getmtime(path), float(min_radius))


def load_map(path: str, min_radius: float) -> RoadMap:
    """The :class:`RoadMap` of a ``.net.xml`` or ``.xodr`` file (see :func:`load_map_file`)."""
    return load_map_file(path, min_radius).roadmap


STOCK_KINDS = ("grid", "spider", "random")
"""Network kinds :func:`stock_network` generates."""


def _sumo_binary(name: str) -> str:
    exe = netconvert_binary()
    return os.path.join(os.path.dirname(exe), name)


def stock_network(kind: str, out_dir: str, seed: int = 0, size: int = 4) -> str:
    """A SUMO network as ``netgenerate`` makes it with its defaults (no tuning): a ``size`` x ``size``
    grid of 100 m blocks with traffic lights at every junction, a spider web of ``size + 1`` arms and
    ``size`` rings, or a random network of ``8 * size`` growth iterations; the spider and random nets
    get lights where netgenerate's heuristic guesses them (``--tls.guess``) and priority junctions
    elsewhere. Every light runs netgenerate's default program (permissive left turns). Returns the
    ``.net.xml`` path in ``out_dir``."""
    args = {"grid": ["--grid", "--grid.number", str(size), "--grid.length", "100", "--default-junction-type",
                     "traffic_light"],
            "spider": ["--spider", "--spider.arm-number", str(size + 1), "--spider.circle-number", str(size),
                       "--tls.guess", "true"],
            "random": ["--rand", "--rand.iterations", str(8 * size), "--tls.guess", "true"]}
    if kind not in args:
        raise MapFileError(f"unknown network kind {kind!r}; choose one of {', '.join(STOCK_KINDS)}.")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{kind}_{seed}.net.xml")
    cmd = [_sumo_binary("netgenerate"), *args[kind], "--seed", str(seed), "--no-warnings", "true",
           "--output-file", out]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    return out


def sumo_to_opendrive(net: str, out: str) -> str:
    """Write a SUMO network as OpenDRIVE with ``netconvert --opendrive-output`` (roads, lanes,
    junctions, and the lights as dynamic signals with controllers); returns ``out``."""
    cmd = [netconvert_binary(), "--sumo-net-file", net, "--opendrive-output", out, "--no-warnings", "true"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    return out
