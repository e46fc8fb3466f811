"""Motion backends: where the gate's setpoints go.

A backend takes one call per control tick: `move(vx, vy, vyaw)` while moving, `stop()` while
stopped, `estop()` while the emergency stop is latched; plus `stand()` / `sit()` posture commands
and `close()`. Calls must return at once: the control loop never waits on a robot. `estop_damps`
says whether an e-stop leaves the robot limp (then only an operator's stand moves it again).

- TwistBackend publishes body twists through a callable (the ROS node passes a /cmd_vel publisher).
- Go2SdkBackend drives a Unitree Go2 in sport mode through unitree_sdk2py's SportClient over DDS.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Protocol


class Backend(Protocol):
    estop_damps: bool

    def move(self, vx: float, vy: float, vyaw: float) -> None: ...
    def stop(self) -> None: ...
    def estop(self) -> None: ...
    def stand(self) -> None: ...
    def sit(self) -> None: ...
    def close(self) -> None: ...


STOP_ZEROS = 3  # zero twists sent after motion ends, before the output goes silent


class TwistBackend:
    """Publishes (vx, vy, vyaw) every tick while moving. A stop (or e-stop) is `stop_zeros` zero
    twists, then silence: a multiplexer (twist_mux) or a driver (go2_ros2_sdk) releases an input
    that stopped publishing, so a stopped robot leaves the velocity input to others; the zeros make
    sure it was left still. The node starts silent. Twists carry no posture, so `stand`/`sit`
    change nothing here."""

    estop_damps = False

    def __init__(self, publish: Callable[[float, float, float], None], stop_zeros: int = STOP_ZEROS) -> None:
        if stop_zeros < 1:
            raise ValueError(f"stop_zeros must be >= 1 (a stop must reach the robot), got {stop_zeros}")
        self._publish = publish
        self.stop_zeros = stop_zeros
        self._zeros_due = 0  # zeros still to send since the robot last moved

    def move(self, vx: float, vy: float, vyaw: float) -> None:
        self._publish(vx, vy, vyaw)
        self._zeros_due = self.stop_zeros

    def stop(self) -> None:
        if self._zeros_due > 0:
            self._zeros_due -= 1
            self._publish(0.0, 0.0, 0.0)

    def estop(self) -> None:
        self.stop()

    def stand(self) -> None:
        pass  # a twist has no posture

    def sit(self) -> None:
        pass  # a twist has no posture

    def close(self) -> None:
        """Leave the robot with a zero twist, whatever was sent before (the owner calls this while its
        publisher still works, e.g. before a Ctrl-C shuts the ROS context down)."""
        self._publish(0.0, 0.0, 0.0)


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


# unitree_sdk2py's return codes (rpc/internal.py and the sport API), named for logs and /diagnostics.
SDK_CODES = {0: "ok", 3001: "unknown error", 3102: "request not sent (no reader on the robot's side)",
             3103: "API not registered", 3104: "timed out waiting for the robot's answer",
             3105: "answer to another API", 3106: "bad answer data", 3107: "lease invalid",
             3201: "robot could not send", 3202: "robot internal error", 3203: "API not implemented by the robot",
             3204: "parameter refused by the robot", 3205: "lease denied", 3206: "lease does not exist",
             3207: "lease exists", 4101: "point path error", 4201: "sport service overtime",
             4202: "sport service not initialised"}
# Motion modes (MotionSwitcher CheckMode "name") in which the sport service takes SportClient calls.
# From Unitree's SDK documentation; no physical robot was available here to check them.
GO2_SPORT_MODES = ("normal", "ai", "mcf")


def describe_code(code: int) -> str:
    """`3104 (timed out waiting for the robot's answer)`."""
    return f"{code} ({SDK_CODES.get(code, 'unknown code')})"


class Go2NotReady(ConnectionError):
    """The robot cannot take sport commands (it did not answer, or its sport service is off)."""


class Go2SdkBackend:
    """Unitree Go2 sport mode over unitree_sdk2py (DDS topics rt/api/sport/request and /response).

    - `start()` does not move the robot: it checks through MotionSwitcher (CheckMode) that the
      robot answers and that its sport service is the active motion mode, else raises Go2NotReady
      with what to do. Standing up is an operator's action (`stand()`, the node's stand service).
    - `move` sends Move (API 1008): fire-and-forget, held by the firmware for 1 s, so the owner must
      call it at a steady rate (the safety gate's rate_hz).
    - `stop` sends StopMove (1003) once per stop; repeated calls while stopped send nothing more.
    - `estop` sends Damp (1001) at once on its own thread, even while another request is in flight;
      the robot then goes limp and moves again only after `stand()`.
    - `stand` = StandUp (1004) + BalanceStand (1002); `sit` = StandDown (1005).

    Every call returns at once: Move/StopMove run on a motion lane, postures on a posture lane and
    Damp on an emergency lane, each keeping only its newest job. Without a robot the SDK's calls time
    out after 1 s (StandDown returns 3104); that delays only the lane, never the control loop. Each
    call's return code goes to `codes` and to `on_code(call, code)` (the node logs and publishes them).
    """

    estop_damps = True

    def __init__(self, interface: str, domain_id: int = 0, client_timeout_s: float = 1.0,
                 on_code: Callable[[str, int], None] | None = None,
                 sport_modes: tuple[str, ...] = GO2_SPORT_MODES) -> None:
        from unitree_sdk2py.core.channel import ChannelFactoryInitialize
        from unitree_sdk2py.go2.sport.sport_client import SportClient

        ChannelFactoryInitialize(domain_id, interface)
        self.interface, self.domain_id, self.sport_modes = interface, domain_id, tuple(sport_modes)
        self._timeout = client_timeout_s
        self._client = SportClient()
        self._client.SetTimeout(client_timeout_s)
        self._client.Init()
        self._on_code = on_code
        self._motion = _Lane("go2-motion")
        self._posture = _Lane("go2-posture")
        self._emergency = _Lane("go2-estop")
        self._state = "idle"  # idle | moving | stopped | damped (decides what a repeated call sends)
        self._lock = threading.Lock()
        self.codes: deque[tuple[str, int]] = deque(maxlen=1000)  # (call, return code) of recent SDK calls
        self._last: dict[str, int] = {}  # call -> its last return code
        self._failures: dict[str, int] = {}  # call -> how many returned non-zero
        self.mode: str | None = None  # the motion mode found at start

    def start(self) -> str:
        """Check the robot's motion mode (blocks up to the client timeout); return its name."""
        from unitree_sdk2py.comm.motion_switcher.motion_switcher_client import MotionSwitcherClient

        switcher = MotionSwitcherClient()
        switcher.SetTimeout(self._timeout)
        switcher.Init()
        code, data = switcher.CheckMode()
        self._record("CheckMode", code)
        where = f"on interface {self.interface!r}, DDS domain {self.domain_id}"
        if code != 0:
            raise Go2NotReady(f"the Go2's motion switcher did not answer CheckMode {where}: SDK code "
                              f"{describe_code(code)}. Is the robot on and wired to that interface?")
        name = data.get("name", "") if isinstance(data, dict) else ""
        if name not in self.sport_modes:
            raise Go2NotReady(f"the Go2 {where} is in motion mode {name!r}, not one of the sport modes "
                              f"{list(self.sport_modes)} (go2_sport_modes): it would ignore sport commands. "
                              f"Select sport mode (the remote, or MotionSwitcher SelectMode) and start again.")
        self.mode = name
        return name

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
        self._record(name, code)
        return code

    def code_summary(self) -> dict[str, tuple[int, int]]:
        """Per SDK call: (its last return code, how many calls failed so far), for /diagnostics."""
        with self._lock:
            return {name: (code, self._failures.get(name, 0)) for name, code in sorted(self._last.items())}

    def _record(self, name: str, code: int) -> None:
        with self._lock:
            self.codes.append((name, code))
            self._last[name] = code
            if code != 0:
                self._failures[name] = self._failures.get(name, 0) + 1
        if self._on_code is not None:
            self._on_code(name, code)
