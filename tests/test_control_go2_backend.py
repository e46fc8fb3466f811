"""Go2SdkBackend over real DDS on loopback: a stand-in sport service in another process receives the
SportClient requests the backend sends (API ids, JSON parameters), and no call blocks the caller."""
import json
import os
import queue
import time

import pytest

pytest.importorskip("unitree_sdk2py")
from unitree_sdk2py.go2.sport.sport_api import (  # noqa: E402
    SPORT_API_ID_BALANCESTAND, SPORT_API_ID_DAMP, SPORT_API_ID_MOVE, SPORT_API_ID_STANDDOWN,
    SPORT_API_ID_STANDUP, SPORT_API_ID_STOPMOVE)

from go2_sport_standin import StandIn  # noqa: E402
from spec_edge_cloud.control.backends import Go2SdkBackend  # noqa: E402

DOMAIN = 101 + os.getpid() % 100  # apart from the ROS test domains (1..100) of conftest.py


@pytest.fixture(scope="module")
def robot():
    """The stand-in robot. StandDown is never answered."""
    standin = StandIn(DOMAIN, silent_apis=(SPORT_API_ID_STANDDOWN,))
    yield standin
    standin.close()


def expect(robot, api_id, timeout=5.0):
    req = robot.next_request(timeout)
    assert req["api_id"] == api_id, req
    return req


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def test_backend_sends_sport_requests_without_blocking(robot):
    backend = Go2SdkBackend("lo", DOMAIN)
    try:
        assert backend.start() == "normal" and backend.mode == "normal"  # the motion mode, checked
        with pytest.raises(queue.Empty):
            robot.next_request(timeout=1.0)  # and nothing more: starting never stands the robot up
        assert timed(backend.stand) < 0.05
        expect(robot, SPORT_API_ID_STANDUP)
        expect(robot, SPORT_API_ID_BALANCESTAND)

        assert timed(backend.move, 0.3, -0.1, 0.5) < 0.05
        move = expect(robot, SPORT_API_ID_MOVE)
        assert json.loads(move["parameter"]) == {"x": 0.3, "y": -0.1, "z": 0.5} and move["noreply"]

        backend.stop()
        backend.stop()  # repeated while stopped: nothing more is sent
        stop = expect(robot, SPORT_API_ID_STOPMOVE)
        assert json.loads(stop["parameter"]) == {} and not stop["noreply"]

        # StandDown is left unanswered: the SDK waits 1 s for it, on the posture lane, not here
        assert timed(backend.sit) < 0.05
        sit = expect(robot, SPORT_API_ID_STANDDOWN)
        t0 = time.time()
        assert timed(backend.estop) < 0.05
        damp = expect(robot, SPORT_API_ID_DAMP)
        assert damp["t"] - t0 < 0.5  # Damp went out while StandDown was still waiting
        backend.estop()  # latched: no second Damp
        with pytest.raises(queue.Empty):
            robot.next_request(timeout=1.5)

        codes = dict(backend.codes)
        assert codes["StandUp"] == codes["BalanceStand"] == codes["StopMove"] == codes["Damp"] == 0
        assert codes["Move"] == codes["CheckMode"] == 0
        assert codes["StandDown"] == 3104  # RPC_ERR_CLIENT_API_TIMEOUT
        assert backend.code_summary()["StandDown"] == (3104, 1)
        assert sit["noreply"] is False
    finally:
        backend.close()


def test_a_burst_of_moves_sends_the_newest_setpoint(robot):
    backend = Go2SdkBackend("lo", DOMAIN)
    try:
        for i in range(1, 200):
            backend.move(i / 1000, 0.0, 0.0)
        received = []
        try:
            while True:
                received.append(json.loads(robot.next_request(timeout=0.5)["parameter"])["x"])
        except queue.Empty:
            pass
        assert received and received[-1] == 0.199  # latest wins; a backlog never builds up
        assert received == sorted(received)
    finally:
        backend.close()
