"""Token events: the JSON messages on /spec/tokens that tell the command side what was decoded.

One JSON object per message:
    {"response": str, "kind": "start"|"provisional"|"final"|"rollback"|"unverified"|"end",
     "index": int (position of the first token in the response), "tokens": [int], "words": [str],
     "t": float (time.time() when produced), "capture_t": float | null (frame capture time)}

Only "final" words may move the robot ("unverified" ones too when the operator allows it: tokens the
robot decoded alone while the cloud was unreachable). Checking the schema here keeps a malformed
message from ever reaching the parser.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

KINDS = ("start", "provisional", "final", "rollback", "unverified", "end")


@dataclass(frozen=True)
class TokenEvent:
    response: str
    kind: str
    index: int
    tokens: tuple[int, ...]
    words: tuple[str, ...]
    t: float
    capture_t: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.response, str) or not self.response:
            raise ValueError(f"token event: 'response' must be a non-empty string, got {self.response!r}")
        if self.kind not in KINDS:
            raise ValueError(f"token event: 'kind' must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise ValueError(f"token event: 'index' must be an integer >= 0, got {self.index!r}")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in self.tokens):
            raise ValueError(f"token event: 'tokens' must be integers, got {list(self.tokens)!r}")
        if not all(isinstance(w, str) for w in self.words):
            raise ValueError(f"token event: 'words' must be strings, got {list(self.words)!r}")
        if len(self.words) != len(self.tokens):
            raise ValueError(f"token event: {len(self.tokens)} tokens but {len(self.words)} words")
        for name in ("t", "capture_t"):
            v = getattr(self, name)
            if (v is not None or name == "t") and not (
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ValueError(f"token event: {name!r} must be a finite number, got {v!r}")

    def to_json(self) -> str:
        d = asdict(self)
        d["tokens"], d["words"] = list(self.tokens), list(self.words)
        return json.dumps(d)


def parse_token_event(data: str | Mapping[str, Any]) -> TokenEvent:
    """Decode and check one event (a JSON string or an already decoded mapping); ValueError if bad."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"token event is not JSON: {e}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"token event must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("response", "kind", "index", "tokens", "words", "t") if k not in data]
    if missing:
        raise ValueError(f"token event lacks {missing}")
    for key in ("tokens", "words"):
        if not isinstance(data[key], list):
            raise ValueError(f"token event: {key!r} must be a list, got {data[key]!r}")
    return TokenEvent(data["response"], data["kind"], data["index"], tuple(data["tokens"]),
                      tuple(data["words"]), data["t"], data.get("capture_t"))
