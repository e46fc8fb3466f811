"""Answers reused across frames: a robot's recent answers to the same prompt, as free drafts.

A robot asks the same question about nearly the same frame every second or two, and its answers
repeat ("no purple box in view . turn left 60 ."). Prompt-lookup style, where a recent answer to the
same prompt continues the tokens so far (committed and just drafted), the tokens that follow in it
go up with the round's draft: proposing them costs no draft-model step, a pass verifies a few more
tokens for nearly the time of one (it reads the weights once), and the target verifies them like
any draft, so greedy output stays the target's own. `SpecClient` drafts first and extends: answers
to one instruction differ at their start (what is in view), where the draft model guesses better.

Sampling: a proposal is a point-mass draft distribution (q = 1 on the proposed token), for which
speculative sampling accepts with probability p(d) and otherwise draws from p without d: exact, as
for any draft, provided the proposal is independent of the uniforms the verifier draws. Those are
a function of (seed, position, purpose) (decoding/verify.py), and an answer sampled with the same
seed about the same prompt used the very same uniforms at the same positions, so a sampled answer
is only ever proposed to a response with another seed.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Answer:
    tokens: tuple[int, ...]
    seed: int | None        # the seed it was sampled with; None: greedy (a function of the prompt alone)


def continuation(answer: Sequence[int], generated: Sequence[int]) -> tuple[int, list[int]]:
    """(n, rest): the longest suffix of `generated` (n tokens) found in `answer` and the tokens after it.

    An occurrence at the same position as in `generated` wins among equally long ones (the answers of
    one instruction mostly differ by a word or a number). Nothing generated yet: the whole answer."""
    if not generated:
        return 0, list(answer)
    here = len(generated)
    for n in range(min(here, len(answer) - 1), 0, -1):
        suffix = list(generated[-n:])
        starts = [s for s in range(len(answer) - n) if list(answer[s:s + n]) == suffix]
        if starts:
            start = here - n if here - n in starts else starts[0]
            return n, list(answer[start + n:])
    return 0, []


class AnswerMemory:
    """The last `answers` answers to each of the last `prompts` prompts (token ids as the key: one
    instruction about one camera's frames has the same ids, the pixels travel beside them)."""

    MIN_MATCH = 2   # tokens a proposal must continue by default (fewer: the draft model guesses better)

    def __init__(self, answers: int = 2, prompts: int = 64):
        if answers < 1 or prompts < 1:
            raise ValueError(f"an answer memory keeps at least one answer of one prompt, got {answers}, {prompts}")
        self.answers, self.prompts = answers, prompts
        self._by_prompt: OrderedDict[tuple[int, ...], list[Answer]] = OrderedDict()

    def remember(self, prompt_ids: Sequence[int], tokens: Sequence[int], seed: int | None) -> None:
        """Keep a verified answer (`seed`: None if greedy); the oldest answer and prompt make room."""
        if not tokens:
            return
        key = tuple(prompt_ids)
        kept = self._by_prompt.pop(key, [])
        kept = [a for a in kept if a.tokens != tuple(tokens)]
        self._by_prompt[key] = [Answer(tuple(tokens), seed), *kept][: self.answers]
        while len(self._by_prompt) > self.prompts:
            self._by_prompt.popitem(last=False)

    def forget(self) -> None:
        """Drop every answer (a benchmark's warm-up must not hand its answers to the measured frames)."""
        self._by_prompt.clear()

    def propose(self, prompt_ids: Sequence[int], generated: Sequence[int], limit: int, seed: int | None,
                sentence_end: Callable[[int], bool] = lambda t: False, min_match: int = MIN_MATCH) -> list[int]:
        """At most `limit` tokens to draft after `generated`, from the best-matching recent answer
        ([] when none continues the last `min_match` tokens of `generated`, or all of them if fewer). A
        proposal cut by `limit` ends at its last sentence end, if it has one: a long proposal that
        stops mid-sentence spends its tail on tokens the next round would propose again anyway."""
        best_n, best = -1, []
        for answer in self._by_prompt.get(tuple(prompt_ids), []):
            if answer.seed is not None and answer.seed == seed:
                continue    # sampled with this response's uniforms: not independent of them
            n, rest = continuation(answer.tokens, generated)
            if rest and n >= min(min_match, len(generated)) and n > best_n:
                best_n, best = n, rest
        if len(best) > limit:
            best = best[:limit]
            ends = [i for i, t in enumerate(best) if sentence_end(t)]
            if ends:
                best = best[: ends[-1] + 1]
        return best
