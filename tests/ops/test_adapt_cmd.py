"""`steer adapt`'s command line and its bench-only impaired transport."""

import pytest

from steer.ops.cli import main


def test_adapt_refuses_a_folder_that_is_not_a_bc_run_and_a_bad_domain_in_one_sentence(tmp_path, capsys):
    assert main(["adapt", "--policy", str(tmp_path), "--domain-id", "7", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a BC run" in err and err.count("\n") == 0
    assert main(["adapt", "--policy", str(tmp_path), "--domain-id", "400"]) == 2
    assert "--domain-id" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing created


def test_adapt_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    out = capsys.readouterr().out
    assert "steer adapt --policy runs/bc-push --domain-id 7" in out and "--algo" in out and "--resume" in out


def test_the_impaired_transport_delays_what_it_sends_and_drops_its_share():
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robot"))
    from robot_helpers import MemoryTransport

    from steer.ops.adapt import ImpairedTransport

    inner = MemoryTransport()
    sink = inner.subscription("/x", object)
    delayed = ImpairedTransport(inner, delay_s=0.02, drop=0.0)
    pub = delayed.publisher("/x", object)
    t0 = time.monotonic()
    pub.publish("a")
    assert sink.take() == []  # held
    while not inner.sent.get("/x"):
        delayed.wait(0.005)
    assert time.monotonic() - t0 >= 0.02 and [m for m, _ in sink.take()] == ["a"]
    lossy = ImpairedTransport(inner, delay_s=0.0, drop=0.05, seed=3)
    pub2 = lossy.publisher("/y", object)
    for i in range(4000):
        pub2.publish(i)
    frac = 1 - len(inner.sent["/y"]) / 4000
    assert 0.04 < frac < 0.06 and lossy.dropped == 4000 - len(inner.sent["/y"])
    assert inner.sent["/y"] == sorted(inner.sent["/y"])  # what passes keeps its order
