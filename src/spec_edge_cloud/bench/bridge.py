"""The real robot-to-cloud path on this machine: verifier process + link emulator process + DEALER link.

    robot (this process, ZmqLink) --> `spec-edge-cloud link` (delay, jitter, bandwidth, loss)
                                  --> `spec-edge-cloud verifier` (target + exits, optionally paced)

Both servers bind port 0 and print the endpoint they got on their ready line, so parallel runs never
collide. Stopping sends SIGTERM (both shut down cleanly on it) and kills only what does not exit.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from ..modeling.placement import CPU_FP32, Placement
from ..transport.client import LinkOptions, ZmqLink, connect
from ..transport.emulator import LinkSpec

READY = re.compile(r"ready on (tcp://\S+)")


class BridgeError(RuntimeError):
    """A server process did not come up; the message carries the end of its output."""


class ServerProcess:
    """`spec-edge-cloud ARGS` in a process of its own: its output kept (the last 40 lines, and each
    line handed to `on_line`), the endpoint of its ready line."""

    def __init__(self, name: str, args: list[str], threads: int | None = None, on_line=None):
        self.name = name
        self.on_line = on_line
        self.lines: deque[str] = deque(maxlen=40)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
        self.proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        self._ready = threading.Event()
        self.endpoint: str | None = None
        threading.Thread(target=self._read, daemon=True, name=f"{name}-output").start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if self.on_line is not None:
                self.on_line(line.rstrip())
            m = READY.search(line)
            if m and self.endpoint is None:
                self.endpoint = m.group(1)
                self._ready.set()

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.lines)
                raise BridgeError(f"{self.name} did not start (exit {self.proc.returncode}):\n{tail}")
        return self.endpoint

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Bridge:
    """`with Bridge(...) as link:` a connected ZmqLink through the emulator to a fresh verifier."""

    def __init__(self, target_dir: Path, tokenizer_fingerprint: str, spec: LinkSpec,
                 exits_dir: Path | None = None, target_profile: Path | None = None, seed: int = 0,
                 start_timeout_s: float = 120.0, threads: int | None = None, placement: Placement = CPU_FP32):
        self.args = ["verifier", "--target", str(target_dir), "--bind", "tcp://127.0.0.1:0", "--quiet-rounds",
                     "--log-level", "WARNING", "--device", placement.device, "--dtype", placement.dtype]
        if exits_dir is not None:
            self.args += ["--exits", str(exits_dir)]
        if target_profile is not None:
            self.args += ["--target-profile", str(target_profile)]
        self.spec, self.seed, self.timeout, self.threads = spec, seed, start_timeout_s, threads
        self.fingerprint = tokenizer_fingerprint
        self.procs: list[ServerProcess] = []
        self.link: ZmqLink | None = None

    def __enter__(self) -> ZmqLink:
        try:
            verifier = ServerProcess("verifier", self.args, self.threads)
            self.procs.append(verifier)
            cloud = verifier.wait_ready(self.timeout)
            s = self.spec
            emu = ["link", "--listen", "tcp://127.0.0.1:0", "--forward", cloud, "--rtt", f"{s.rtt_s * 1000:g}ms",
                   "--jitter", f"{s.jitter_s * 1000:g}ms", "--loss", f"{s.loss:g}", "--seed", str(self.seed)]
            if s.bandwidth_bps:
                emu += ["--bandwidth", f"{round(s.bandwidth_bps)}bit"]
            emulator = ServerProcess("link emulator", emu)
            self.procs.append(emulator)
            robot = emulator.wait_ready(self.timeout)
            self.link = connect(robot, self.fingerprint, LinkOptions(handshake_timeout_s=self.timeout))
            if not self.link.is_up:
                raise BridgeError(f"no WELCOME from the verifier through {robot}")
        except BaseException:
            self.__exit__()
            raise
        return self.link

    def __exit__(self, *exc) -> None:
        if self.link is not None:
            self.link.close()
        for p in reversed(self.procs):
            p.stop()
