"""Incremental answer parser: turns FINAL words into actions the moment each sentence ends.

The robot should start moving while the rest of the answer is still being decoded, so the parser
does not wait for the whole answer: every "." that becomes final closes a sentence, and that
sentence is judged at once. The first sentence is the observation; each later one must be an action.
A sentence that is not an action is reported as `Rejected` and never executed; parsing goes on
with the next sentence, so one bad sentence costs only itself.

Only FINAL words may be fed. Provisional words can still be rolled back, and this parser has no
undo: whatever it emits is meant to move the robot. The ROS command node enforces this. Words the
robot decoded alone (cloud unreachable) are final but unverified: fed with `verified=False`, they
keep the sentence count right while any action sentence containing one is rejected.
"""
from __future__ import annotations

from dataclasses import dataclass

from .actions import PERIOD, Action, ActionError, parse_action

MAX_SENTENCE_WORDS = 64  # bounds memory against a model that never says "."


@dataclass(frozen=True)
class Observation:
    """The first sentence of the answer: what the model saw. Informational only."""

    text: str


@dataclass(frozen=True)
class ActionReady:
    """A complete, well-formed action sentence; ready for the safety gate and the executor."""

    action: Action
    sentence: str


@dataclass(frozen=True)
class Rejected:
    """A sentence that will not be executed, and why."""

    sentence: str
    reason: str


Event = Observation | ActionReady | Rejected


class IncrementalParser:
    """Feed final words one at a time; get events as sentences complete. `reset()` per response."""

    def __init__(self, max_sentence_words: int = MAX_SENTENCE_WORDS) -> None:
        if max_sentence_words < 1:
            raise ValueError(f"max_sentence_words must be >= 1, got {max_sentence_words}")
        self.max_sentence_words = max_sentence_words
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next word starts a new answer (with its observation)."""
        self._words: list[str] = []
        self._sentences = 0
        self._overflowed = False
        self._unverified = False  # the open sentence holds a word fed with verified=False

    def feed(self, word: str, verified: bool = True) -> list[Event]:
        """Consume one FINAL token text (a word-level token; surrounding spaces are ignored, and a text
        holding several space-separated words is taken word by word). Never feed provisional tokens."""
        events: list[Event] = []
        for w in word.split():
            self._unverified |= not verified
            event = self._feed_word(w)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> list[Event]:
        """End of the response: a sentence still open was cut off and is rejected, never executed."""
        rest = " ".join(self._words)
        events: list[Event] = [Rejected(rest, "unterminated at end of response")] if self._words else []
        self.reset()
        return events

    def _feed_word(self, w: str) -> Event | None:
        if w != PERIOD:
            if len(self._words) < self.max_sentence_words:
                self._words.append(w)
            elif not self._overflowed:
                self._overflowed = True
                return Rejected(" ".join(self._words) + " ...",
                                f"sentence longer than {self.max_sentence_words} words")
            return None
        sentence, overflowed, unverified = " ".join(self._words), self._overflowed, self._unverified
        first = self._sentences == 0
        self._words, self._overflowed, self._unverified = [], False, False
        self._sentences += 1
        if overflowed:
            return None  # already rejected when it overflowed
        if not sentence:
            return Rejected("", "empty sentence (a lone '.')")
        if first:
            return self._observation(sentence)
        if unverified:
            return Rejected(sentence, "contains unverified tokens (decoded without the cloud)")
        try:
            return ActionReady(parse_action(sentence), sentence)
        except ActionError as e:
            return Rejected(sentence, str(e))

    @staticmethod
    def _observation(sentence: str) -> Event:
        try:
            parse_action(sentence)
        except ActionError:
            return Observation(sentence)
        return Rejected(sentence, "the first sentence must be an observation; an action there is not executed")
