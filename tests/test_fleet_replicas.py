"""A fleet on a local Ray cluster started here: two verifier replicas of a tiny target (Ray actors, each
its own ZeroMQ endpoint) behind a front, robots over real ZeroMQ links with real drafts.

One cluster and one fleet serve the module (starting them costs about a minute on this machine);
the tests run in order: lossless with affinity, a replica killed mid-response, a drain, autoscaling.
The target is paced (a pass of 60 ms, its exit's verdict at 20 ms) so responses last long enough to
be interrupted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from decoding_fixtures import perturbed, target_alone  # noqa: E402
from spec_edge_cloud.decoding.client import SpecClient  # noqa: E402
from spec_edge_cloud.decoding.link import InProcessLink  # noqa: E402
from spec_edge_cloud.decoding.modes import DecodeConfig  # noqa: E402
from spec_edge_cloud.decoding.target import TargetEngine  # noqa: E402
from spec_edge_cloud.decoding.verifier import VerifierService  # noqa: E402
from spec_edge_cloud.fleet.config import FleetConfig  # noqa: E402
from spec_edge_cloud.fleet.front import open_fleet  # noqa: E402
from spec_edge_cloud.modeling.bundle import load_bundle  # noqa: E402
from spec_edge_cloud.transport import security  # noqa: E402
from spec_edge_cloud.transport.client import LinkOptions, connect  # noqa: E402
from processes import stop  # noqa: E402
from transport_fixtures import save_target  # noqa: E402

PROFILE = {"name": "test-fleet", "description": "test profile", "draft": {"per_token_ms": 0.0, "prefill_ms": 0.0},
           "target": {"prefill_ms": 10.0, "cum_layer_ms": {"1": [10, 20, 40, 60], "9": [10, 20, 40, 60]}},
           "link": {"rtt_ms": 0.0}}
# liveness loose enough for a 2-core machine under other work (load averages of 10 seen)
FAST = dict(heartbeat_s=0.25, dead_after_s=3.0, reconnect_s=0.5, retry_s=0.5, handshake_timeout_s=30.0)
DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    keys = tmp / "keys"
    server_pub, server_sec = security.generate(keys, "server")
    robot_pub, robot_sec = security.generate(keys, "robot")
    security.authorize(robot_pub, keys / "clients")
    _, intruder_sec = security.generate(keys / "other", "intruder")
    target_dir = save_target(tmp / "target", "llama", seed=14, exit_layers=[2], zero_layers=(3,))
    (tmp / "paced.json").write_text(json.dumps(PROFILE))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20, log_to_driver=False)
    config = FleetConfig(replicas=2, min_replicas=1, max_replicas=2, replica_num_cpus=0.5, health_interval_s=0.25,
                         scale_down_idle_s=3600.0, scale_up_wait_s=3600.0)
    # the test's robots share one key: a replica must take all of them (up to 8 after a failover) at once
    server = {"bind": "tcp://127.0.0.1:0", "log_rounds": False, "server_secret_key": str(server_sec),
              "authorized_clients_dir": str(keys / "clients"), "max_connections_per_client": 8,
              "max_sessions_per_client": 8}
    front, pool = open_fleet(config, {"target_dir": str(target_dir), "target_profile": str(tmp / "paced.json")},
                             server)
    target = load_bundle(target_dir)
    try:
        yield dict(front=front, pool=pool, target=target, draft=perturbed(target, 0.3, 114), server=server,
                   model={"target_dir": str(target_dir), "target_profile": str(tmp / "paced.json")},
                   keys=dict(client_secret_key=str(robot_sec), server_public_key=str(server_pub)),
                   intruder=dict(client_secret_key=str(intruder_sec), server_public_key=str(server_pub)))
    finally:
        front.stop()
        pool.close()
        ray.shutdown()


def default_prompt(index: int, k: int) -> str:
    return f"w{index + 3} w{(index * 7 + k) % 50 + 3} w5"


# prompts whose greedy answers (from this target) run the whole 40 tokens: long enough to be interrupted
LONG = [default_prompt(i, k) for i, k in ((0, 0), (2, 0), (4, 0), (5, 0), (6, 0), (1, 1))]


class Robot:
    """A robot: its own link to the front and its own draft, decoding responses one after another."""

    def __init__(self, fleet, index: int):
        self.fleet, self.index = fleet, index
        self.link = connect(fleet["front"].endpoint, fleet["draft"].tokenizer_fingerprint(),
                            LinkOptions(**FAST, **fleet["keys"], name=f"robot{index}"))
        self.results: list[dict] = []
        self.mode = "spec-ee-pre"   # "cloud": the target decodes alone (GENERATE, a stream of TOKENs)
        self.finals = 0             # tokens committed in its current response
        self.texts: list[str] | None = None  # its prompts, if not the default ones
        self.sampling: dict = {}    # temperature and seed, to sample

    def prompt(self, k: int) -> str:
        return self.texts[k] if self.texts else default_prompt(self.index, k)

    def run(self, responses: int, max_new: int = 16, on_tokens=None) -> None:
        draft = self.fleet["draft"]
        for k in range(responses):
            before = (self.link.endpoint, self.link.stats.reconnects)
            self.finals = 0
            config = DecodeConfig(mode=self.mode, gamma=4, max_new_tokens=max_new, exit_threshold=0.0,
                                  deadline_s=DEADLINE_S, **self.sampling)
            resp = SpecClient(draft, self.link, config).generate(draft.encode(self.prompt(k)),
                                                                 on_tokens and on_tokens(self))
            self.results.append(dict(prompt=self.prompt(k), resp=resp, before=before,
                                     after=(self.link.endpoint, self.link.stats.reconnects), max_new=max_new))

    def close(self) -> None:
        self.link.close()


def run_robots(fleet, n: int, responses: int, max_new: int = 16, on_tokens=None, during=None,
               before=None) -> list[Robot]:
    robots = [Robot(fleet, i) for i in range(n)]
    if before is not None:
        before(robots)  # connected, not started
    threads = [threading.Thread(target=r.run, args=(responses, max_new, on_tokens)) for r in robots]
    for t in threads:
        t.start()
    if during is not None:
        during(robots)
    for t in threads:
        t.join(120)
    for r in robots:
        r.close()
    return robots


def reference(fleet, text: str, max_new: int) -> list[int]:
    target = fleet["target"]
    return target_alone(target, target.encode(text), max_new)


def cloud_alone(fleet, text: str, config: DecodeConfig) -> list[int]:
    """A response of cloud decoding from one in-process verifier of the same target, nothing failing."""
    link = InProcessLink(VerifierService(TargetEngine(fleet["target"])))
    try:
        return SpecClient(fleet["draft"], link, config).generate(fleet["draft"].encode(text)).tokens
    finally:
        link.close()


def rounds_by_replica(pool) -> dict[str, int]:
    pool.poll()
    return {s.endpoint: s.stats.get("rounds", 0) for s in pool.slots}


def test_curve_and_the_allow_list_guard_the_front_and_every_replica(fleet):
    """A key not on the list gets no answer from the front nor from a replica it names directly;
    without CURVE, none either; a listed key is welcomed by both."""
    fingerprint = fleet["draft"].tokenizer_fingerprint()
    replicas = [s.endpoint for s in fleet["pool"].slots]
    for endpoint in [fleet["front"].endpoint, *replicas]:
        for keys in (fleet["intruder"], {}):
            link = connect(endpoint, fingerprint, LinkOptions(**{**FAST, "handshake_timeout_s": 1.5}, **keys))
            try:
                assert not link.is_up and link.stats.frames_in == 0, (endpoint, bool(keys))
            finally:
                link.close()
        link = connect(endpoint, fingerprint, LinkOptions(**FAST, **fleet["keys"]))
        try:
            assert link.is_up and link.endpoint in replicas
        finally:
            link.close()


def test_eight_robots_on_two_replicas_equal_the_target_alone(fleet):
    """8 robots at once: every greedy response is the target's own, each stays on one replica for the
    whole response (the link never reconnected during it), and both replicas served."""
    before = rounds_by_replica(fleet["pool"])
    robots = run_robots(fleet, 8, 2)
    used = set()
    for r in robots:
        assert len(r.results) == 2
        for res in r.results:
            assert res["resp"].verified, res["resp"].metrics.fallback_reason
            assert res["resp"].tokens == reference(fleet, res["prompt"], res["max_new"]), (r.index, res["prompt"])
            assert res["before"] == res["after"], "the robot's session moved during a response"
            used.add(res["after"][0])
    after = rounds_by_replica(fleet["pool"])
    assert len(used) == 2 and set(used) == set(after)
    assert all(after[e] > before.get(e, 0) for e in after), f"a replica served no round: {before} -> {after}"


def test_a_replica_killed_mid_response(fleet):
    """A replica is killed while its robots are mid-response: one speculating (DRAFT rounds), one in
    greedy cloud decoding (GENERATE, a stream of TOKENs), one in sampled cloud decoding. Its
    connections drop; the links go to the front for another replica and re-prefill there with the
    tokens committed so far (a stream asks for the tokens it still owes), so every response finishes
    verified: the greedy ones equal to the target alone, the sampled one to the same seed's stream
    from one verifier with nothing failing. Ray brings the replica back on a fresh port, and the next
    robots use it."""
    pool = fleet["pool"]
    killed, lock, roles = {}, threading.Lock(), {}

    def before(robots):
        by_replica = {}
        for r in robots:
            by_replica.setdefault(r.link.endpoint, []).append(r)
        for r, text in zip(robots, LONG):
            r.texts = [text]
        doomed = max(by_replica.values(), key=len)
        assert len(doomed) >= 3, f"6 robots on 2 replicas, fewer than 3 share one: {list(by_replica)}"
        doomed[0].mode = doomed[1].mode = "cloud"
        doomed[1].sampling = dict(temperature=0.5, seed=0)  # every LONG prompt's sample runs 40 tokens then
        roles.update(endpoint=doomed[0].link.endpoint, streamer=doomed[0], sampler=doomed[1],
                     speculators=doomed[2:])

    def on_tokens(robot):
        def hook(kind, index, tokens):
            if kind != "final":
                return
            robot.finals += len(tokens)
            with lock:
                mid = [r for r in roles["speculators"] if 1 <= r.finals <= 30 and r.link.endpoint == roles["endpoint"]]
                if not killed and mid and all(1 <= roles[k].finals <= 30 for k in ("streamer", "sampler")):
                    name = next(s.name for s in pool.slots if s.endpoint == roles["endpoint"])
                    pool.kill(name)
                    killed.update(name=name, endpoint=roles["endpoint"], speculators=mid)
        return hook

    recoveries, lost = len(pool.recoveries), fleet["front"].counters["lost"]
    robots = run_robots(fleet, 6, 1, max_new=40, on_tokens=on_tokens, before=before)
    assert killed, "no three responses on one replica were mid-way together: nothing killed"
    sampler = roles["sampler"]
    for r in robots:
        resp = r.results[0]["resp"]
        assert resp.verified, (r.index, r.mode, resp.metrics.fallback_reason)
        greedy = reference(fleet, r.results[0]["prompt"], 40)
        if r is sampler:
            config = DecodeConfig(mode="cloud", max_new_tokens=40, **sampler.sampling)
            assert resp.tokens == cloud_alone(fleet, r.results[0]["prompt"], config), "the sampled stream differs"
            assert resp.tokens != greedy, "the sampled stream is the greedy one: it tests nothing more"
        else:
            assert resp.tokens == greedy, (r.index, r.mode)
        assert len(resp.tokens) == 40, "a prompt of LONG has a short answer: the kill may come too late"
    moved = [roles["streamer"], sampler, *killed["speculators"]]
    for r in moved:
        assert r.results[0]["after"][0] != killed["endpoint"], f"robot {r.index} ({r.mode}) did not re-prefill"
    assert fleet["front"].counters["lost"] - lost >= len(moved), "the moved links did not name the replica lost"
    deadline = time.monotonic() + 300
    while len(pool.recoveries) == recoveries and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(pool.recoveries) > recoveries, "the killed replica did not come back"
    slot = next(s for s in pool.slots if s.name == killed["name"])
    assert slot.healthy and slot.restarts >= 1 and slot.endpoint != killed["endpoint"]
    robots = run_robots(fleet, 4, 1)
    assert all(r.results[0]["resp"].verified for r in robots)
    assert all(r.results[0]["resp"].tokens == reference(fleet, r.results[0]["prompt"], 16) for r in robots)
    assert slot.endpoint in {r.results[0]["after"][0] for r in robots}, "the replica back got no robot"


def test_a_replica_frozen_mid_response(fleet):
    """A replica that stops answering without dropping its connections (frozen, as behind a lost
    node): its robots finish on the robot within their deadline, never different from the target;
    the front stops sending robots to it until it answers again."""
    pool = fleet["pool"]
    frozen = {}

    def on_tokens(robot):
        def hook(kind, index, tokens):
            if kind == "final" and robot.index == 0 and not frozen:
                slot = next(s for s in pool.slots if s.endpoint == robot.link.endpoint)
                os.kill(slot.stats["pid"], signal.SIGSTOP)
                frozen.update(slot=slot, at=time.monotonic())
            if kind == "unverified" and not hasattr(robot, "first_unverified"):
                robot.first_unverified = time.monotonic()
        return hook

    try:
        robots = run_robots(fleet, 4, 1, max_new=40, on_tokens=on_tokens)
        assert frozen, "no response got far enough to freeze its replica"
        assert not frozen["slot"].healthy, "the front still counts the frozen replica as up"
        fell_back = 0
        for r in robots:
            resp, ref = r.results[0]["resp"], reference(fleet, r.results[0]["prompt"], 40)
            if resp.verified:
                assert resp.tokens == ref
            else:
                fell_back += 1
                assert resp.tokens[:resp.metrics.unverified_from] == ref[:resp.metrics.unverified_from]
                assert r.first_unverified - frozen["at"] <= DEADLINE_S + 2.0, resp.metrics.fallback_reason
        assert fell_back >= 1, "robot 0 did not notice its replica froze"
    finally:
        if frozen:
            os.kill(frozen["slot"].stats["pid"], signal.SIGCONT)
    deadline = time.monotonic() + 60
    while not frozen["slot"].healthy and time.monotonic() < deadline:
        time.sleep(0.25)
    assert frozen["slot"].healthy, "the replica did not come back after it thawed"


def test_drain_two_to_one_while_robots_decode(fleet):
    """2 -> 1 while 4 robots decode 3 responses each, draining the replica robot 0 is on: its sessions
    finish there, its robots' next sessions move to the other replica, nothing is lost or differs,
    and the drained replica is removed once no robot talks to it."""
    pool = fleet["pool"]
    started = threading.Event()
    drained = []

    def on_tokens(robot):
        def hook(kind, index, tokens):
            if kind == "final" and robot.index == 0 and not started.is_set():
                drained.append(next(s.name for s in pool.slots if s.endpoint == robot.link.endpoint))
                started.set()
        return hook

    def during(robots):
        assert started.wait(60)
        pool.drain(drained[0])

    robots = run_robots(fleet, 4, 3, on_tokens=on_tokens, during=during)
    assert any(r.results[0]["before"][0] != r.results[-1]["after"][0] for r in robots), "no robot moved"
    for r in robots:
        for res in r.results:
            assert res["resp"].verified, res["resp"].metrics.fallback_reason
            assert res["resp"].tokens == reference(fleet, res["prompt"], res["max_new"])
    deadline = time.monotonic() + 30
    while len(pool.slots) > 1 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert len(pool.slots) == 1, "the drained replica was not removed"
    assert {res["after"][0] for r in robots for res in r.results[-1:]} == {pool.slots[0].endpoint}


def test_autoscaling_adds_a_replica_under_queueing_and_drains_it_when_idle(fleet):
    """One replica, 6 robots and a queue-wait target of 20 ms: a replica is added; idle, the fleet
    drains back to its minimum of one."""
    pool = fleet["pool"]
    assert len(pool.slots) == 1
    pool.config.scale_up_wait_s = 0.02
    try:
        deadline = time.monotonic() + 240
        robots = []
        while len(pool.slots) < 2 and time.monotonic() < deadline:
            robots += run_robots(fleet, 6, 1)
        assert len(pool.slots) == 2, "no replica was added"
        assert all(res["resp"].tokens == reference(fleet, res["prompt"], 16) for r in robots for res in r.results
                   if res["resp"].verified)
        while not all(s.healthy for s in pool.slots) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert all(s.healthy for s in pool.slots)
    finally:
        pool.config.scale_up_wait_s = 3600.0
    pool.config.scale_down_idle_s = 1.0
    try:
        deadline = time.monotonic() + 30
        while len(pool.slots) > 1 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert len(pool.slots) == 1, "the idle replica was not drained"
    finally:
        pool.config.scale_down_idle_s = 3600.0


def replica_gone(endpoint: str, fingerprint: str, keys: dict, timeout: float) -> bool:
    """Whether the replica at `endpoint` stops answering a listed robot's HELLO within `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        link = connect(endpoint, fingerprint, LinkOptions(**{**FAST, "handshake_timeout_s": 1.5}, **keys))
        try:
            if not link.is_up:
                return True
        finally:
            link.close()
        time.sleep(0.5)
    return False


def test_verifier_node_with_replicas_runs_its_fleet(fleet, tmp_path):
    """verifier_node with `replicas: 1`, in its own process, joining this Ray cluster: it starts its own
    fleet (a front and a replica) and names the front on /diagnostics over DDS; a robot given that
    endpoint is sent to the node's replica and decodes the target's own answer; the replica's rounds
    show in its /diagnostics status; SIGTERM ends the node, its replica with it."""
    rclpy = pytest.importorskip("rclpy")
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    params = {**fleet["model"], **fleet["server"], "replicas": 1, "ray": ray.get_runtime_context().gcs_address,
              "replica_num_cpus": 0.5, "health_interval_s": 0.25}
    (tmp_path / "cloud.yaml").write_text(yaml.safe_dump({"verifier_node": {"ros__parameters": params}}))
    log = open(tmp_path / "node.log", "w")
    node_proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.ros.verifier_node", "--ros-args",
                                  "--params-file", str(tmp_path / "cloud.yaml")], stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("fleet_diagnostics_test")
    latest: dict[str, DiagnosticStatus] = {}
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda a: latest.update({s.name: s for s in a.status}),
                             10)

    def values(name: str) -> dict:
        return {kv.key: kv.value for kv in latest[name].values} if name in latest else {}

    def spin_until(cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end and node_proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
        return cond()

    def output() -> str:
        log.flush()
        return (tmp_path / "node.log").read_text()[-3000:]

    try:
        assert spin_until(lambda: values("verifier_node/replica-1").get("healthy") == "True", 240), output()
        front = values("verifier_node")
        assert latest["verifier_node"].message == f"fleet front on {front['endpoint']}"
        assert latest["verifier_node/replica-1"].level == DiagnosticStatus.OK
        replica = values("verifier_node/replica-1")["endpoint"]
        assert replica not in {s.endpoint for s in fleet["pool"].slots}, "the node's replica is one of the test's"
        draft = fleet["draft"]
        link = connect(front["endpoint"], draft.tokenizer_fingerprint(), LinkOptions(**FAST, **fleet["keys"]))
        try:
            assert link.is_up and link.endpoint == replica, (link.endpoint, replica)
            text = LONG[0]
            resp = SpecClient(draft, link, DecodeConfig(mode="spec-ee-pre", gamma=4, max_new_tokens=16,
                                                        exit_threshold=0.0, deadline_s=DEADLINE_S)
                              ).generate(draft.encode(text))
        finally:
            link.close()
        assert resp.verified, resp.metrics.fallback_reason
        assert resp.tokens == reference(fleet, text, 16)
        assert spin_until(lambda: int(values("verifier_node/replica-1").get("rounds") or 0) >= resp.metrics.rounds,
                          30), values("verifier_node/replica-1")
        node_proc.send_signal(signal.SIGTERM)
        assert node_proc.wait(60) == 0, output()
        assert replica_gone(replica, draft.tokenizer_fingerprint(), fleet["keys"], 30), "its replica outlived the node"
    finally:
        node.destroy_node()
        rclpy.shutdown()
        stop(node_proc)
        log.close()
