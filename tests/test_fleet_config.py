"""A fleet's parameters, checked before anything starts; and no Ray at all without --replicas."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spec_edge_cloud.commands import verifier
from spec_edge_cloud.fleet.config import FleetConfig
from transport_fixtures import save_target


def test_fleet_parameters_are_checked():
    assert FleetConfig(replicas=2, min_replicas=1, max_replicas=4).bounds == (1, 4)
    assert FleetConfig(replicas=3).bounds == (3, 3)
    with pytest.raises(ValueError, match="replicas = 5 is outside min_replicas..max_replicas = 1..4"):
        FleetConfig(replicas=5, min_replicas=1, max_replicas=4)
    with pytest.raises(ValueError, match="replicas must be an int"):
        FleetConfig(replicas="2")
    with pytest.raises(ValueError, match="health_interval_s = 0.0 is outside"):
        FleetConfig(replicas=1, health_interval_s=0.0)


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    verifier.add_arguments(p)
    return p.parse_args(list(argv))


def test_flags_become_fleet_parameters():
    params = verifier.merge({"replicas": 1}, parse("--replicas", "4", "--ray", "auto", "--min-replicas", "2",
                                                   "--max-replicas", "8"))
    assert {k: params[k] for k in ("replicas", "ray", "min_replicas", "max_replicas")} == \
        {"replicas": 4, "ray": "auto", "min_replicas": 2, "max_replicas": 8}


def test_a_fleet_off_loopback_without_keys_is_refused_at_start(tmp_path, capsys):
    target = save_target(tmp_path / "t", "llama", seed=1, exit_layers=[2])
    (tmp_path / "cloud.yaml").write_text("verifier_node:\n  ros__parameters:\n    replica_bind: tcp://0.0.0.0:0\n")
    rc = verifier.run(parse("--config", str(tmp_path / "cloud.yaml"), "--target", str(target), "--replicas", "2"))
    assert rc == 2 and "replica_bind" in capsys.readouterr().err


def test_one_verifier_process_never_imports_ray(tmp_path):
    """Without --replicas the verifier serves as before and Ray is never imported."""
    target = save_target(tmp_path / "t", "llama", seed=1, exit_layers=[2])
    code = ("import argparse, os, signal, sys, threading\n"
            "from spec_edge_cloud.commands import verifier\n"
            "p = argparse.ArgumentParser(); verifier.add_arguments(p)\n"
            f"a = p.parse_args(['--target', {str(target)!r}, '--bind', 'tcp://127.0.0.1:0', '--quiet-rounds'])\n"
            "installed = verifier.until_signal\n"  # SIGTERM once served (its handler is in place)
            "def stop_soon():\n"
            "    done = installed(); threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start(); return done\n"
            "verifier.until_signal = stop_soon\n"
            "rc = verifier.run(a)\n"
            "print('RAY', 'ray' in sys.modules, 'RC', rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(Path(verifier.__file__).parents[2])))
    assert "verifier ready on tcp://" in out.stdout, out.stderr[-2000:]
    assert "RAY False RC 0" in out.stdout, out.stdout + out.stderr[-2000:]


def test_bench_fleet_scaling_efficiency_is_against_the_fewest_replicas_with_as_many_robots():
    from spec_edge_cloud.bench.fleet import _efficiency, table
    runs = [dict(replicas=n, robots=r, rounds_per_s=rps, p95_round_s=1.0, median_round_s=0.5, rows_per_pass=4.0,
                 killed=False) for n, r, rps in ((1, 8, 10.0), (2, 8, 12.0), (1, 64, 10.0), (4, 64, 36.0))]
    runs.append(dict(runs[-1], killed=True, rounds_per_s=20.0))
    _efficiency(runs)
    assert [round(r.get("scaling_efficiency", -1), 2) for r in runs] == [1.0, 0.6, 1.0, 0.9, 0.5]
    text = table({"target": "t", "regime": "go2-orin-a100", "emulated": True, "gamma": 4, "max_batch": 8,
                  "seconds": 30, "runs": runs, "overhead": {"single_ms": 0.5, "fleet_ms": 0.6, "front_ms": 0.1,
                                                            "rounds": 300}})
    assert "| 4 | 64 | 36.00 | 1.000 | 0.500 | 4.00 | 0.90 |" in text and "+0.100 ms" in text


def test_assign_goes_by_load_and_never_to_the_replica_a_robot_just_lost():
    """The least loaded healthy replica, not one draining or down; a robot that names the replica it
    lost (its HELLO's `lost`) goes elsewhere even if that one looks idle, unless no other is up."""
    pytest.importorskip("ray")
    from spec_edge_cloud.fleet.pool import ReplicaPool, Slot
    pool = ReplicaPool(FleetConfig(replicas=3), {}, {})
    idle, busy, down = (Slot(n, None, f"tcp://127.0.0.1:{p}", healthy=True) for n, p in (("a", 1), ("b", 2), ("c", 3)))
    busy.stats, down.healthy = {"queued": 3, "sessions": 2}, False
    pool.slots = [idle, busy, down]
    assert pool.assign() == idle.endpoint
    assert pool.assign(avoid=idle.endpoint) == busy.endpoint
    idle.draining = True
    assert pool.assign(avoid=busy.endpoint) == busy.endpoint  # the only one up
    busy.healthy = False
    assert pool.assign() is None
