"""Exit thresholds calibrated online: which early verdicts are sure enough to pre-draft on.

Why: a pre-draft made on an early verdict that the FINAL then contradicts is wasted drafting and
bytes, and a fixed confidence threshold says nothing about how often that happens for this target,
this exit and this task. Every FINAL labels the early verdicts of its round for free (equal to it,
or a miss), so per session and per exit the robot keeps the last `window` (confidence, missed)
pairs and, after each label, picks the exit's threshold: the lowest confidence of a fixed grid at
which the verdicts at least that confident miss less often than `target`, with a one-sided Wilson
score upper bound at `confidence` (e.g. 0.9: the bound holds with 90% confidence).

The walk down the grid is a fixed-sequence test (learn then test): from the most confident
threshold down, stop at the first whose bound is not below the target. Thresholds with too few
verdicts for any bound below the target (fewer than `min_verdicts`) are skipped, not failed, and
so are those no verdict was seen at (a threshold never goes below the evidence). Which
thresholds are tested depends only on the confidences, never on the labels, so given the
confidences each tested bound holds at the stated confidence and the walk does not spend it
(no correction for the number of thresholds). This assumes the labels of a window are independent
draws; a session that drifts is followed through the window. An exit without a threshold is not
trusted: the robot does not pre-draft on it until its evidence says otherwise. The labels come with
each FINAL (every exit's verdict and confidence), so the cloud need send only the EARLYs the robot
may act on: those at or above the lowest exit's threshold (`lowest`).
"""
from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist

NO_VERDICTS = 2.0   # an exit threshold above every confidence: the cloud sends no EARLY
PRIOR = 4.0         # hit_rate: the weight, in verdicts, of an exit's overall rate in each cell's estimate

# candidate thresholds, most confident first (finer near 1, where good exits' verdicts gather)
GRID = (0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2,
        0.1, 0.0)


def wilson_upper(misses: int, n: int, z: float) -> float:
    """One-sided Wilson score upper bound on a rate seen as `misses` in `n` (1 when n is 0)."""
    if n <= 0:
        return 1.0
    p, z2 = misses / n, z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


class ExitCalibration:
    """Per exit layer, the session's labelled early verdicts and the threshold they support."""

    def __init__(self, target: float, confidence: float = 0.9, window: int = 512):
        if not 0.0 < target < 1.0:
            raise ValueError(f"the miss-rate target must be in (0, 1), got {target}")
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"the bound's confidence must be in [0.5, 1), got {confidence}")
        if window < 1:
            raise ValueError(f"the window must hold at least one verdict, got {window}")
        self.target, self.confidence, self.window = target, confidence, window
        self.z = NormalDist().inv_cdf(confidence)
        # the fewest verdicts whose bound can be below the target (none of them missed)
        self.min_verdicts = math.floor(self.z ** 2 * (1 - target) / target) + 1
        self._seen: dict[int, deque[tuple[int, bool]]] = {}   # layer -> (grid index, missed), oldest first
        self._count: dict[int, list[int]] = {}                # layer -> verdicts per grid index
        self._missed: dict[int, list[int]] = {}
        self._threshold: dict[int, float | None] = {}

    @staticmethod
    def _cell(confidence: float) -> int:
        """The grid index of the highest threshold a verdict this confident clears."""
        return next((i for i, t in enumerate(GRID) if confidence >= t), len(GRID) - 1)

    def observe(self, layer: int, confidence: float, missed: bool) -> None:
        """An exit's early verdict at `confidence`, labelled by its round's FINAL."""
        seen = self._seen.setdefault(layer, deque())
        count = self._count.setdefault(layer, [0] * len(GRID))
        miss = self._missed.setdefault(layer, [0] * len(GRID))
        if len(seen) == self.window:
            old, old_missed = seen.popleft()
            count[old] -= 1
            miss[old] -= old_missed
        cell = self._cell(confidence)
        seen.append((cell, bool(missed)))
        count[cell] += 1
        miss[cell] += bool(missed)
        self._threshold[layer] = self._walk(count, miss)

    def _walk(self, count: list[int], miss: list[int]) -> float | None:
        best, n, m = None, 0, 0
        for t, c, k in zip(GRID, count, miss):
            n, m = n + c, m + k
            if c == 0 or n < self.min_verdicts:
                continue                      # no verdicts of its own, or untestable: no bound below the target yet
            if wilson_upper(m, n, self.z) >= self.target:
                break
            best = t
        return best

    def threshold(self, layer: int) -> float | None:
        """The lowest confidence at which `layer`'s verdicts are trusted (None: not at all)."""
        return self._threshold.get(layer)

    def trusts(self, layer: int, confidence: float) -> bool:
        t = self.threshold(layer)
        return t is not None and confidence >= t

    def lowest(self) -> float:
        """The threshold to ask the cloud for: the lowest exit's (NO_VERDICTS while none is trusted).
        Every FINAL labels every exit whatever was sent, so EARLYs go only where they may be used."""
        trusted = [t for t in self._threshold.values() if t is not None]
        return min(trusted) if trusted else NO_VERDICTS

    def hit_rate(self, layer: int | None, confidence: float) -> float:
        """A point estimate of how often `layer`'s verdicts at `confidence` equal their FINAL: the
        verdicts of its grid cell, shrunk toward the exit's overall rate (itself toward 1/2) with the
        weight of `PRIOR` verdicts, so a cell with few labels says little and none says the exit's
        rate. What an unshown pre-draft risks is only drafting time and bytes (no bound needed)."""
        count, miss = self._count.get(layer), self._missed.get(layer)
        if count is None:
            return 0.5
        n, m = sum(count), sum(miss)
        overall = (n - m + 1) / (n + 2)
        cell = self._cell(confidence)
        return (count[cell] - miss[cell] + PRIOR * overall) / (count[cell] + PRIOR)

    def predraft_threshold(self, min_hit: float) -> float:
        """The lowest grid confidence at which some exit's estimated hit rate reaches `min_hit` (what
        to ask the cloud for, so that the EARLYs worth a pre-draft come; NO_VERDICTS if none)."""
        layers = list(self._count) or [None]   # no labels yet: every exit at 1/2
        return min((t for layer in layers for t in GRID if self.hit_rate(layer, t) >= min_hit), default=NO_VERDICTS)

    def bound(self, layer: int) -> float:
        """The upper bound on the miss rate of `layer`'s trusted verdicts (1 when none is trusted)."""
        t = self.threshold(layer)
        if t is None:
            return 1.0
        upto = GRID.index(t) + 1
        return wilson_upper(sum(self._missed[layer][:upto]), sum(self._count[layer][:upto]), self.z)
