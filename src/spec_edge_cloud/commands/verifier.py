"""`spec-edge-cloud verifier`: serve a target model (with its exit heads) to robots over ZeroMQ.

Parameters come from a ROS parameter file (`/**/verifier_node: ros__parameters: {...}`, the file the
ROS verifier node reads too; `verifier_node:` works as well), and command-line flags override them. `kill -USR1 PID` prints
one line, `verifier stats: {JSON}` (sessions, connections, counters: `VerifierServer.stats`). With `--replicas N`
the target runs in N replicas on Ray behind a front that assigns each robot one (docs/fleet.md);
without it, one process and no Ray.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from ..modeling.placement import add_placement_arguments, resolve_placement

NODE = "verifier_node"
# parameters that choose the model; every other key of the file is a transport.server.ServerConfig field
MODEL_KEYS = ("target_dir", "exits_dir", "exit_layers", "target_profile", "device", "dtype", "cache", "cache_slots",
              "max_cache_len", "compile")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="ROS parameter file, e.g. config/cloud.yaml")
    p.add_argument("--target", default=None, help="target model directory (target_dir)")
    p.add_argument("--exits", default=None, help="exit-head directory (exits_dir; default: beside the target)")
    p.add_argument("--exit-layers", default=None, help="comma-separated exit layers (exit_layers)")
    add_placement_arguments(p)
    p.add_argument("--cache", choices=["auto", "dynamic", "static"], default=None,
                   help="KV cache (cache): static = one preallocated slot per session; auto (default) = static on a "
                        "GPU or below float32, else dynamic")
    p.add_argument("--cache-slots", type=int, default=None, help="static cache slots (cache_slots, default 16)")
    p.add_argument("--max-cache-len", type=int, default=None,
                   help="tokens per slot (max_cache_len; default: the model's context, at most 2048); a response "
                        "that would outgrow it gets an ERROR")
    p.add_argument("--compile", choices=["on", "off"], default=None,
                   help="capture the static passes as CUDA graphs, one per segment between exits (compile)")
    p.add_argument("--bind", default=None, help="ROUTER endpoint, e.g. tcp://0.0.0.0:5555 (bind)")
    p.add_argument("--target-profile", default=None,
                   help="timing profile (name or JSON file): pad every pass to its times; timings are EMULATED")
    p.add_argument("--server-key", default=None, help="server key pair NAME.key_secret (server_secret_key)")
    p.add_argument("--clients", default=None, help="directory of admitted robot public keys (authorized_clients_dir)")
    p.add_argument("--insecure", action="store_true", default=None, help="allow plaintext on a non-loopback bind")
    p.add_argument("--idle-timeout", type=float, default=None, help="seconds (idle_timeout_s)")
    p.add_argument("--max-sessions", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=None,
                   help="robots' rounds verified together in one forward pass (max_batch; 1: no batching)")
    p.add_argument("--replicas", type=int, default=None,
                   help="serve from N replicas of the target on Ray, behind a front on --bind (replicas; 0: one process)")
    p.add_argument("--ray", default=None, help="Ray cluster: local (start one here), auto (the running one) or "
                                               "HOST:PORT (ray)")
    p.add_argument("--min-replicas", type=int, default=None, help="autoscaling lower bound (min_replicas)")
    p.add_argument("--max-replicas", type=int, default=None, help="autoscaling upper bound (max_replicas)")
    p.add_argument("--quiet-rounds", action="store_true", help="do not log every round (log_rounds: false)")
    p.add_argument("--log-level", default="INFO")


def read_params(path: str | None) -> dict:
    """The verifier_node parameters of a ROS parameter file ({} without a file)."""
    if path is None:
        return {}
    import yaml
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"parameter file {file} not found")
    try:
        doc = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{file} is not valid YAML: {exc}") from None
    section = next((doc[k] for k in (f"/**/{NODE}", NODE, f"/{NODE}") if k in doc), None)
    params = (section or {}).get("ros__parameters")
    if not isinstance(params, dict):
        raise ValueError(f"{file}: expected `{NODE}: ros__parameters: {{...}}`")
    return dict(params)


def merge(params: dict, args: argparse.Namespace) -> dict:
    flags = {"target_dir": args.target, "exits_dir": args.exits, "bind": args.bind,
             "target_profile": args.target_profile, "server_secret_key": args.server_key,
             "authorized_clients_dir": args.clients, "insecure": args.insecure,
             "idle_timeout_s": args.idle_timeout, "max_sessions": args.max_sessions,
             "max_batch": args.max_batch, "device": args.device, "dtype": args.dtype, "cache": args.cache,
             "cache_slots": args.cache_slots, "max_cache_len": args.max_cache_len,
             "compile": None if args.compile is None else args.compile == "on",
             "log_rounds": False if args.quiet_rounds else None, "replicas": args.replicas, "ray": args.ray,
             "min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
             "exit_layers": [int(x) for x in args.exit_layers.split(",")] if args.exit_layers else None}
    return {**params, **{k: v for k, v in flags.items() if v is not None}}


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = merge(read_params(args.config), args)
        model = {k: params.pop(k, None) for k in MODEL_KEYS}
        from ..fleet.config import FleetConfig  # the fleet's keys (no Ray import)
        fleet = {k: params.pop(k) for k in FleetConfig.keys() if k in params}
        check_model_params(model)
        if not model["target_dir"]:
            raise ValueError("no target model: pass --target DIR or set target_dir in the parameter file")
        if fleet.get("replicas"):
            return run_fleet(fleet, model, params)
        from ..transport.security import require_security
        from ..transport.server import ServerConfig
        config = ServerConfig.from_params(params)
        require_security(config.bind, bool(config.server_secret_key), config.insecure, "verifier bind")  # before loading
        if config.insecure and not config.server_secret_key:
            print(f"spec-edge-cloud verifier: WARNING: insecure: plaintext allowed on {config.bind}: anyone who "
                  "can reach it can use the target and read the robots' prompts and images", file=sys.stderr,
                  flush=True)
        from ..transport.assembly import VerifierConfig, open_verifier
        from ..transport.server import STATS_LINE, VerifierServer
        engine = open_verifier(VerifierConfig.from_params(model))
        pacer, placement = engine.pacer, resolve_placement(model["device"], model["dtype"])
        server = VerifierServer(engine, config)
        endpoint = server.start()
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"spec-edge-cloud verifier: error: {exc}", file=sys.stderr)
        return 2
    done, asked = until_signal(), threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: asked.set())
    secure = "CURVE on" if config.server_secret_key else "plaintext (loopback)" if not config.insecure else \
        "PLAINTEXT, insecure"
    emulated = f"; timings EMULATED with profile {engine.pacer.profile.name}" if engine.pacer else ""
    cache = f"static cache {engine.slots.slots} x {engine.slots.max_len}" if engine.slots else "dynamic cache"
    print(f"verifier ready on {endpoint} ({secure}; target {engine.bundle.path} on {placement}, {cache}, exits "
          f"{engine.heads.layers if engine.heads else []}{emulated})", flush=True)
    while not done.wait(0.2) and not server.stopped.is_set():
        if asked.is_set():
            asked.clear()
            print(f"{STATS_LINE} {json.dumps(server.stats())}", flush=True)
    server.stop()
    if server.failure is not None:
        print(f"spec-edge-cloud verifier: error: the serving thread died ({type(server.failure).__name__}: "
              f"{server.failure}); exiting", file=sys.stderr)
        return 1
    return 0


def check_model_params(model: dict) -> None:
    """The model-choosing parameters, typed as the server's (one clear error at start)."""
    problems = [f"{k} must be a string, got {type(v).__name__} {v!r}"
                for k in ("target_dir", "exits_dir", "target_profile", "device", "dtype", "cache")
                if (v := model[k]) is not None and not isinstance(v, str)]
    problems += [f"{k} must be a positive integer, got {v!r}" for k in ("cache_slots", "max_cache_len")
                 if (v := model[k]) is not None and not (type(v) is int and v > 0)]
    if model["compile"] is not None and type(model["compile"]) is not bool:
        problems.append(f"compile must be a boolean, got {model['compile']!r}")
    layers = model["exit_layers"]
    if layers is not None and not (isinstance(layers, list) and all(type(x) is int and x >= 0 for x in layers)):
        problems.append(f"exit_layers must be a list of non-negative integers, got {layers!r}")
    if problems:
        raise ValueError("verifier parameters: " + "; ".join(problems))


def until_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    return done


def run_fleet(fleet: dict, model: dict, server: dict) -> int:
    """`--replicas N`: the replicas on Ray and the front on `bind`, until a signal; a summary of every
    replica (sessions, queue, rows per pass, queue wait, device time per token) logged each 10 s."""
    from ..fleet.config import FleetConfig
    from ..fleet.front import open_fleet
    log = logging.getLogger("spec_edge_cloud.fleet")
    try:
        front, pool = open_fleet(FleetConfig(**fleet), model, server)
    except (ValueError, FileNotFoundError, OSError, TimeoutError) as exc:
        print(f"spec-edge-cloud verifier: error: {exc}", file=sys.stderr)
        return 2
    lo, hi = pool.config.bounds
    print(f"verifier ready on {front.endpoint} (fleet front: {len(pool.slots)} replicas on Ray, {lo}..{hi}; "
          f"target {model['target_dir']}; replicas at {[s.endpoint for s in pool.slots]})", flush=True)
    done = until_signal()
    while not done.wait(10.0):
        log.info("fleet: %s", format_summary(pool.summary()))
    front.stop()
    pool.close()
    return 0


def format_summary(summary: dict) -> str:
    """One line of a fleet's state (the front's `/diagnostics`-style report)."""
    reps = "; ".join(f"{r['name']} {'up' if r['healthy'] else 'DOWN'}{' draining' if r['draining'] else ''} "
                     f"sessions {r['sessions']} queued {r['queued']} rounds {r['rounds']} rows/pass "
                     f"{r['rows_per_pass'] or 0:.2f} p95 wait {r['p95_wait_s'] * 1000:.0f} ms device "
                     f"{(r['device_s_per_token'] or 0) * 1000:.1f} ms/token restarts {r['restarts']}"
                     for r in summary["replicas"])
    return f"p95 queue wait {summary['p95_wait_s'] * 1000:.0f} ms; {reps}"
