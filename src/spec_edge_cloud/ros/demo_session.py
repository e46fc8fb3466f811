"""The demo's run: wait for the pipeline, play every episode in every mode, print, report.

The processes are already started (a launcher.ProcessGroup); this module drives them through a
DemoObserver node and stops them at the end. A process that dies ends the demo with its log's tail.
"""
from __future__ import annotations

import time
from pathlib import Path

import rclpy

from .demo_observer import DemoObserver, ModeRun
from .demo_report import EpisodeSetup, fmt, mode_summary, success_text, write_report
from .launcher import ProcessGroup

READY_TIMEOUT_S = 180.0      # torch, models and MuJoCo load on a busy 2-core machine
STOP_GRACE_S = 10.0


class ProcessDied(RuntimeError):
    pass


def episode_setup(seed: int) -> EpisodeSetup:
    """The layout the simulator will build for `seed` (same function, same seed)."""
    from spec_edge_cloud.sim import scene
    from spec_edge_cloud.sim.vocab import instruction
    layout = scene.random_layout(seed)
    goal = layout.goal_object
    return EpisodeSetup(seed, instruction(goal.colour, goal.shape), layout.start, (goal.x, goal.y),
                        tuple((o.name, o.x, o.y) for o in layout.objects))


class DemoSession:
    def __init__(self, group: ProcessGroup, out: Path, modes: list[str], header: list[str]) -> None:
        self.group, self.out, self.modes, self.header = group, out, modes, header
        rclpy.init()
        self.obs = DemoObserver()
        self._printed: set[str] = set()

    def _check_alive(self) -> None:
        for name, rc in self.group.exited().items():
            log = self.group.log_dir / f"{name}.log"
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:]) if log.exists() else ""
            raise ProcessDied(f"{name} exited with code {rc} (log {log}):\n{tail}")

    def _wait_ready(self) -> None:
        t0, shown = time.monotonic(), None

        def tick() -> None:
            nonlocal shown
            self._check_alive()
            waiting = [k for k, ok in self.obs.ready().items() if not ok]
            if waiting != shown:
                shown = waiting
                print(f"  [{time.monotonic() - t0:5.1f} s] waiting for: {', '.join(waiting)}" if waiting
                      else f"  [{time.monotonic() - t0:5.1f} s] all nodes up", flush=True)
        print("Starting the nodes...", flush=True)
        if not self.obs.spin_until(lambda: all(self.obs.ready().values()), READY_TIMEOUT_S, tick):
            raise RuntimeError(f"the pipeline was not up after {READY_TIMEOUT_S:g} s: {self.obs.ready()}")
        tick()

    def _print_answers(self, since: float) -> None:
        for r in self.obs.responses.values():
            if r.start_t >= since and r.end_t is not None and r.capture_t is not None and r.id not in self._printed:
                self._printed.add(r.id)
                print(f"      answer {r.id}: TTC {fmt(r.ttc_s)} s  `{r.text}`", flush=True)

    def _episode(self, setup: EpisodeSetup, mode: str, max_time: float) -> ModeRun:
        obs = self.obs
        obs.set_mode(mode)
        obs.reset(setup.seed, setup.start[:2])
        started = time.time()
        obs.instruct(setup.instruction)

        def outcome() -> dict | None:
            return next((o for t, o in obs.outcomes if t >= started and o.get("seed") == setup.seed), None)

        def tick() -> None:
            self._check_alive()
            self._print_answers(started)
        obs.spin_until(lambda: outcome() is not None, 2 * max_time + 10.0, tick)
        obs.instruct("")   # the task is over: the draft node sends an empty answer and the robot stops
        ended = time.time()
        obs.spin_until(lambda: False, 0.5, tick)   # late metrics and records of the last answer
        return obs.run(mode, setup.seed, setup.instruction, started, ended, outcome())

    def run(self, first_seed: int, episodes: int, max_time: float) -> int:
        try:
            self._wait_ready()
            runs: list[ModeRun] = []
            setups = [episode_setup(first_seed + i) for i in range(episodes)]
            for i, setup in enumerate(setups):
                print(f"\nEpisode {i + 1}/{episodes}: seed {setup.seed}, \"{setup.instruction}\"", flush=True)
                for mode in self.modes:
                    print(f"  {mode}: running...", flush=True)
                    r = self._episode(setup, mode, max_time)
                    runs.append(r)
                    print(f"  {mode:12s} {r.result:22s} task {fmt(r.task_s, 1):>5} s   TTFA {fmt(r.ttfa_s):>5} s   "
                          f"TTC {fmt(r.first_ttc_s):>5} s   answers {len(r.completed)} ({r.decoded_as()})", flush=True)
        except ProcessDied as e:
            print(f"demo: FAILED: {e}", flush=True)
            return 1
        self.group.interrupt()   # the nodes shut down while the report is written
        print("\nPer mode (means over the episodes; TTC speedup = cloud's TTC / the mode's; acceptance = share of "
              "drafted tokens accepted):")
        for row in mode_summary(runs, self.modes):
            print(f"  {row['mode']:12s} success {success_text(row)}   {fmt(row['decisions_per_minute'], 1)} decisions/min"
                  f"   time to goal {fmt(row['task_s'], 1)} s   TTFA {fmt(row['ttfa_s'])} s   TTC {fmt(row['ttc_s'])} s"
                  f"   speedup {fmt(row['speedup'])}   acceptance {fmt(row['acceptance'])}"
                  f"   tokens/round {fmt(row['tokens_per_round'])}   hit rate {fmt(row['hit_rate'])}")
        report = write_report(self.out, self.header, runs, setups, self.modes)
        print(f"\nReport: {report}")
        return 0

    def close(self) -> bool:
        """Stop everything; True if every process stopped cleanly."""
        self.obs.destroy_node()
        rclpy.try_shutdown()
        codes = self.group.stop(STOP_GRACE_S)
        unclean = {n: rc for n, rc in codes.items() if rc != 0}
        if unclean:
            print(f"demo: processes that did not stop cleanly (exit codes): {unclean}")
        return not unclean
