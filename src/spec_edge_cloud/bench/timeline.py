"""One response's timeline, rebuilt from the client's trace: robot lane, cloud lane, transfers.

The client (decoding/client.py, `trace=`) notes when each draft starts, when each DRAFT leaves and
every message that arrives. From these:
- robot lane: drafting intervals (draft start -> its DRAFT sent); a pre-draft is a *hit* when its
  round got a FINAL, a *miss* when the cloud dropped it;
- cloud lane: each verification pass ends one one-way delay before its FINAL arrived and lasted the
  FINAL's compute_s; an early verdict left one one-way delay before its EARLY arrived. The cloud's
  clock is not visible to the robot, so these use the link's nominal one-way delay (RTT / 2):
  with jitter they are off by up to half the jitter.
- per-round records for the profile simulator: drafted, accepted, whether an EARLY came first and
  whether it agreed with the FINAL (the pre-draft hit condition), and the exit layer it came from;
  if not, which of the EARLY's alternatives the FINAL was (fan-out: the branch that would hit);
  how many of its drafted tokens a recent answer proposed (reuse), how many the grammar forced
  (drafted without a draft step), the EARLY's confidence and the exits' labels from the FINAL
  (layer, missed, confidence: what calibrates adaptive's thresholds).
All times are seconds from frame capture.
"""
from __future__ import annotations

from ..decoding.messages import Early, Final, Token


def build(trace: list[tuple[float, str, dict]], session: str, offset_s: float, one_way_s: float) -> dict:
    """Timeline of one response; `offset_s` is the client's start time after capture."""
    drafts, sends, early, finals, tokens = [], [], [], [], []
    open_draft = None
    final_rounds = set()
    for t, event, d in trace:
        t += offset_s
        if event == "draft":
            open_draft = t
        elif event == "send":
            sends.append({"t": t, "round": d["round"], "tokens": d["tokens"], "pre": d["pre"],
                          "reused": d.get("reused", 0), "forced": d.get("forced", 0)})
            drafts.append({"start": open_draft if open_draft is not None else t, "end": t,
                           "round": d["round"], "pre": d["pre"]})
            open_draft = None
        elif event == "recv":
            msg = d["msg"]
            if getattr(msg, "session", None) != session:
                continue
            if isinstance(msg, Early):
                early.append({"t": t, "round": msg.round, "layer": msg.layer, "accepted": msg.accepted,
                              "next": msg.next_token, "confidence": msg.confidence,
                              "alternatives": [list(a) for a in msg.alternatives]})
            elif isinstance(msg, Final):
                if msg.round in final_rounds:       # a retransmitted DRAFT is answered again: one round
                    continue
                finals.append({"t": t, "round": msg.round, "accepted": msg.accepted, "next": msg.next_token,
                               "compute_s": msg.compute_s, "tokens_in_pass": msg.tokens_in_pass,
                               "exits": [list(x) for x in msg.exits], "exit_percent": list(msg.exit_percent)})
                final_rounds.add(msg.round)
            elif isinstance(msg, Token):
                tokens.append({"t": t, "index": msg.index, "compute_s": msg.compute_s})
    for dr in drafts:
        dr["outcome"] = ("hit" if dr["round"] in final_rounds else "miss") if dr["pre"] else None
    passes = [{"start": f["t"] - one_way_s - f["compute_s"], "end": f["t"] - one_way_s, "round": f["round"]}
              for f in finals]
    passes += [{"start": k["t"] - one_way_s - k["compute_s"], "end": k["t"] - one_way_s, "round": None}
               for k in tokens]
    return {"one_way_s": one_way_s, "drafts": drafts, "sends": sends, "early": early, "finals": finals,
            "tokens": tokens, "passes": passes}


def rounds(timeline: dict) -> list[dict]:
    """Per verified round, in order: what the profile simulator replays."""
    drafted = {s["round"]: s["tokens"] for s in timeline["sends"]}
    reused = {s["round"]: s.get("reused", 0) for s in timeline["sends"]}
    forced = {s["round"]: s.get("forced", 0) for s in timeline["sends"]}
    first_early = {}
    for e in timeline["early"]:
        first_early.setdefault(e["round"], e)
    out = []
    for f in timeline["finals"]:
        e = first_early.get(f["round"])
        final = [f["accepted"], f["next"]]
        alternatives = e.get("alternatives", []) if e else []
        out.append({"drafted": drafted.get(f["round"], f["tokens_in_pass"] - 1), "accepted": f["accepted"],
                    "early_layer": e["layer"] if e else None,
                    "agreed": bool(e and [e["accepted"], e["next"]] == final),
                    "alternative": alternatives.index(final) + 1 if final in alternatives else None,
                    "reused": reused.get(f["round"], 0), "forced": forced.get(f["round"], 0),
                    "early_confidence": e.get("confidence") if e else None,
                    "labels": [[layer, [k, b] != final, pct / 100] for (layer, k, b), pct
                               in zip(f.get("exits", []), f.get("exit_percent", []))]})
    return out
