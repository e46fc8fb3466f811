"""Stopping the helper processes a test starts, without letting a slow exit fail the test."""
from __future__ import annotations

import subprocess


def stop(*processes: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM every process, then SIGKILL any still running after `grace_s`.

    On a loaded two-core CI machine a DDS participant can take many seconds to leave; how a helper
    exits is not what the tests that use this are about (the launcher's own tests check clean exits).
    """
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(grace_s)
