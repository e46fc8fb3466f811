"""Motion backends: where the gate's setpoints go.

A backend takes one call per control tick: `move(vx, vy, vyaw)` while moving, `stop()` while
stopped, `estop()` while the emergency stop is latched; plus `stand()` / `sit()` posture commands
and `close()`. Calls must return at once: the control loop never waits on a robot.

- TwistBackend publishes body twists through a callable (the ROS node passes a /cmd_vel publisher).
- Go2SdkBackend drives a Unitree Go2 in sport mode through unitree_sdk2py's SportClient over DDS.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Protocol


class Backend(Protocol):
    def move(self, vx: float, vy: float, vyaw: float) -> None: ...
    def stop(self) -> None: ...
    def estop(self) -> None: ...
    def stand(self) -> None: ...
    def sit(self) -> None: ...
    def close(self) -> None: ...


class TwistBackend:
    """Publishes (vx, vy, vyaw) every tick; a stop is a zero twist, sent every tick while stopped so
    that /cmd_vel consumers with their own timeouts see a steady stream. Twists carry no posture,
    so `stand`/`sit` change nothing here."""

    def __init__(self, publish: Callable[[float, float, float], None]) -> None:
        self._publish = publish

    def move(self, vx: float, vy: float, vyaw: float) -> None:
        self._publish(vx, vy, vyaw)

    def stop(self) -> None:
        self._publish(0.0, 0.0, 0.0)

    def estop(self) -> None:
        self._publish(0.0, 0.0, 0.0)

    def stand(self) -> None:
        pass  # a twist has no posture

    def sit(self) -> None:
        pass  # a twist has no posture

    def close(self) -> None:
        """Leave the robot with a zero twist."""
        self.stop()


class _Lane:
    """A worker thread that runs the most recently submitted job: older pending jobs are dropped.

    SportClient calls can block (a request waits up to 1 s for its response, and a write waits up to
    1 s for a matched reader), so they run here, off the control loop. Keeping only the newest job
    means a slow robot link receives the current setpoint, never a backlog of stale ones."""

    def __init__(self, name: str) -> None:
        self._job: Callable[[], None] | None = None
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None] | None) -> None:
        """Replace the pending job (None: just drop what is pending)."""
        with self._cv:
            self._job = job
            self._cv.notify()

    def close(self, timeout: float) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._job is None:
                    return
                job, self._job = self._job, None
            job()


class Go2SdkBackend:
    """Unitree Go2 sport mode over unitree_sdk2py (DDS topics rt/api/sport/request and /response).

    - `start()` stands the robot up: StandUp then BalanceStand. The firmware may ignore Move for
      several seconds after StandUp, so a plan that begins right after start may lose its first
      second or two of motion; start the backend before the first answer arrives.
    - `move` sends Move (API 1008): fire-and-forget, held by the firmware for 1 s, so the owner must
      call it at a steady rate (the safety gate's rate_hz).
    - `stop` sends StopMove (1003) once per stop; repeated calls while stopped send nothing more.
    - `estop` sends Damp (1001) at once on its own thread, even while another request is in flight;
      the robot then goes limp and moves again only after `stand()`.
    - `stand` = StandUp (1004) + BalanceStand (1002); `sit` = StandDown (1005).

    Every call returns at once: Move/StopMove run on a motion lane, postures on a posture lane and
    Damp on an emergency lane, each keeping only its newest job. Without a robot the SDK's calls time
    out after 1 s (StandDown returns 3102); that delays only the lane, never the control loop.
    """

    def __init__(self, interface: str, domain_id: int = 0, client_timeout_s: float = 1.0) -> None:
        from unitree_sdk2py.core.channel import ChannelFactoryInitialize
        from unitree_sdk2py.go2.sport.sport_client import SportClient

        ChannelFactoryInitialize(domain_id, interface)
        self._client = SportClient()
        self._client.SetTimeout(client_timeout_s)
        self._client.Init()
        self._motion = _Lane("go2-motion")
        self._posture = _Lane("go2-posture")
        self._emergency = _Lane("go2-estop")
        self._state = "idle"  # idle | moving | stopped | damped (decides what a repeated call sends)
        self._lock = threading.Lock()
        self.codes: deque[tuple[str, int]] = deque(maxlen=1000)  # (call, return code) of recent SDK calls

    def start(self) -> None:
        self.stand()

    def move(self, vx: float, vy: float, vyaw: float) -> None:
        with self._lock:
            self._state = "moving"
        self._motion.submit(lambda: self._call("Move", self._client.Move, vx, vy, vyaw))

    def stop(self) -> None:
        with self._lock:
            if self._state in ("stopped", "damped", "idle"):
                return
            self._state = "stopped"
        self._motion.submit(lambda: self._call("StopMove", self._client.StopMove))

    def estop(self) -> None:
        with self._lock:
            if self._state == "damped":
                return
            self._state = "damped"
        self._motion.submit(None)
        self._posture.submit(None)
        self._emergency.submit(lambda: self._call("Damp", self._client.Damp))

    def stand(self) -> None:
        with self._lock:
            self._state = "idle"
        self._posture.submit(self._stand_up)

    def sit(self) -> None:
        with self._lock:
            self._state = "idle"
        self._motion.submit(None)
        self._posture.submit(lambda: self._call("StandDown", self._client.StandDown))

    def close(self, timeout: float = 2.0) -> None:
        """Stop moving, then end the lanes once their pending calls are done (each within the SDK timeout)."""
        self.stop()
        for lane in (self._motion, self._posture, self._emergency):
            lane.close(timeout)

    def _stand_up(self) -> None:
        self._call("StandUp", self._client.StandUp)
        self._call("BalanceStand", self._client.BalanceStand)

    def _call(self, name: str, fn: Callable[..., int], *args: float) -> int:
        code = fn(*args)
        with self._lock:
            self.codes.append((name, code))
        return code
