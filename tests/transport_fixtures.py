"""Real processes for transport tests: verifier servers and link emulators started through the CLI."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.tiny import tiny_bundle


class CliProcess:
    """`spec-edge-cloud ARGS` in its own process; output goes to a log file, shown when a test fails."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                   HF_HUB_OFFLINE="1")
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "spec_edge_cloud.cli", *args], stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        self.endpoint = ""

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Wait for the `... ready on tcp://...` line; returns the endpoint it names."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"ready on (tcp://\S+)", self.log.read_text())
            if m:
                self.endpoint = m.group(1)
                return self.endpoint
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.log.name} not ready (exit {self.proc.poll()}):\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text().splitlines()[-n:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def save_target(directory: Path, kind: str, seed: int, exit_layers: list[int], zero_layers: tuple[int, ...] = ()):
    """A tiny target saved for a server process, with (untrained) exit heads beside it.

    `zero_layers` (0-based) get zero output projections: those layers then pass the residual stream
    through unchanged, so an exit below them agrees exactly with the final layer (a pair "built to agree").
    """
    bundle = tiny_bundle(kind, vocab=60, seed=seed, layers=4)
    with torch.no_grad():
        for i in zero_layers:
            layer = bundle.model.get_decoder().layers[i]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    bundle.save(directory)
    ExitHeads(exit_layers, bundle.hidden_size, 16).save(directory)
    return directory
