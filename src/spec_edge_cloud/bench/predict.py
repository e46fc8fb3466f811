"""What `bench profile` reports: predictions in the paper's regimes, their sensitivity, the fleet, and
the calibration of the simulator against real replay runs.

- paper comparison: at the per-token acceptance probability the paper's Go2 figure implies (0.55
  to 0.6 at γ = 4, i.e. an acceptance, the share of drafted tokens accepted, of 0.29 to 0.33),
  exit agreement swept from 0.5 to 0.9, every mode simulated on the same seeded jobs; latency
  reduction against `cloud` printed beside the paper's figures, for our pre-drafting (with the
  server-side queue) and the paper's (client-only); and the per-token acceptance probability at
  which the paper's method would reach the paper's figure with this regime's timing;
- adaptive against the best fixed mode, per regime and point (should be within 5%);
- fleet: N robots sharing one verifier GPU, batched verification: latency and GPU s per token;
- calibration: a replay result (its regime, link and recorded per-round traces) simulated and
  compared mode by mode with what the replay measured (mean time to complete, 10% target).
"""
from __future__ import annotations

import copy
import dataclasses
import random
import statistics

from ..decoding.modes import MODES
from ..decoding.timing import TimingProfile
from ..transport.emulator import LinkSpec
from .profile_sim import (BernoulliRounds, ExitConfidences, Job, RecordedRounds, Round, SimRegime, simulate,
                          simulate_fleet)
from .regimes import PAPER, load_regime
from .summary import Bound, summarize

FIXED = ("cloud", "spec", "spec-ee", "spec-ee-pre")


def sim_regime(name: str, profile: TimingProfile, link: LinkSpec | None = None, exit_fraction: float = 0.5,
               encode_s: float = 0.0) -> SimRegime:
    link = link or LinkSpec((profile.rtt_ms or 0) / 1000, profile.jitter_ms / 1000)
    return SimRegime(name, profile, link.rtt_s, link.jitter_s, link.bandwidth_bps, exit_fraction, encode_s=encode_s)


def acceptance_share(token_acceptance_prob: float, gamma: int) -> float:
    """The acceptance (expected share of drafted tokens accepted) of a draft whose tokens are each
    accepted with this probability until the first miss: (p + p^2 + ... + p^γ) / γ."""
    return sum(token_acceptance_prob ** k for k in range(1, gamma + 1)) / gamma


def token_acceptance_prob(share: float, gamma: int) -> float:
    """The inverse of acceptance_share (bisection): the per-token probability with this acceptance."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if acceptance_share(mid, gamma) < share else (lo, mid)
    return (lo + hi) / 2


def bernoulli_jobs(n: int, tokens: int, token_acceptance_prob: float, agreement: float, seed: int,
                   first_action: int | None = None, confidences: ExitConfidences | None = None) -> list[Job]:
    rng = random.Random(seed)
    return [Job(tokens, BernoulliRounds(token_acceptance_prob, agreement, rng, confidences=confidences), first_action,
                frame=i, repeat=0) for i in range(n)]


def exit_confidences(result: dict, exit_fraction: float) -> ExitConfidences | None:
    """The confidences a replay recorded for the exit nearest `exit_fraction` of the target's depth,
    split by whether the FINAL confirmed them (every speculative round's labels, every mode); None
    where the replay recorded no labels (runs from before they were)."""
    labels = [tuple(x) for r in result["records"] for t in r["round_trace"] for x in t.get("labels", ())]
    if not labels:
        return None
    layers = sorted({layer for layer, _, _ in labels})
    layer = min(layers, key=lambda x: abs(x / result["target_layers"] - exit_fraction))
    pick = [(missed, c) for at, missed, c in labels if at == layer]
    return ExitConfidences(layer, tuple(c for missed, c in pick if not missed),
                           tuple(c for missed, c in pick if missed))


def regime_bound(regime: SimRegime, gamma: int) -> Bound:
    return Bound(regime.draft_s, regime.rtt_s, regime.pass_s(1.0, gamma + 1))


def run_modes(regime: SimRegime, make_jobs, modes=MODES, gamma: int = 4, max_new_tokens: int = 64,
              seed: int = 0, branches: int = 1, decode: dict | None = None) -> dict:
    """Every mode on its own copy of the same jobs (same seeds), summarised; `branches` > 1: fan-out;
    `decode`: further DecodeConfig fields (simulate: exits, reuse, grammar)."""
    records = []
    for mode in modes:
        records += simulate(regime, mode, make_jobs(), gamma, max_new_tokens, seed, branches=branches, decode=decode)
    return summarize(records, regime_bound(regime, gamma))


def reduction(summary: dict, mode: str, base: str = "cloud") -> float | None:
    """Latency reduction of `mode` against `base` (1 - TTC(mode) / TTC(base), mean TTC)."""
    if mode not in summary or base not in summary:
        return None
    return 1 - summary[mode]["ttc_s"]["mean"] / summary[base]["ttc_s"]["mean"]


def adaptive_check(summary: dict) -> dict:
    fixed = {m: summary[m]["ttc_s"]["mean"] for m in FIXED if m in summary}
    best = min(fixed, key=fixed.get)
    ratio = summary["adaptive"]["ttc_s"]["mean"] / fixed[best]
    return {"best_fixed": best, "adaptive_over_best": ratio, "within_5pct": ratio <= 1.05}


def client_only_reduction(regime: SimRegime, make_jobs, cloud_ttc: float, gamma: int, tokens: int,
                          seed: int) -> float:
    """Latency reduction of the paper's pre-drafting (client-only, no server-side queue)."""
    recs = simulate(regime, "spec-ee-pre", make_jobs(), gamma, tokens, seed, server_queue=False)
    return 1 - statistics.mean(r.ttc_s for r in recs) / cloud_ttc


def implied_token_acceptance_prob(regime: SimRegime, target: float, agreement: float, tokens: int, responses: int,
                                  gamma: int, seed: int, confidences: ExitConfidences | None = None) -> float | None:
    """The per-token acceptance probability at which the paper's method (client-only pre-drafting)
    reaches `target` latency reduction; None if even 0.99 does not (bisection on seeded simulations)."""
    def red(a: float) -> float:
        make = lambda: bernoulli_jobs(responses, tokens, a, agreement, seed, confidences=confidences)  # noqa: E731
        cloud = statistics.mean(r.ttc_s for r in simulate(regime, "cloud", make(), gamma, tokens, seed))
        return client_only_reduction(regime, make, cloud, gamma, tokens, seed)
    lo, hi = 0.0, 0.99
    if red(hi) < target:
        return None
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if red(mid) < target else (lo, mid)
    return (lo + hi) / 2


def paper_comparison(regime_name: str, token_acceptance_probs=(0.55, 0.575, 0.6),
                     agreements=(0.5, 0.6, 0.7, 0.8, 0.9), tokens: int = 32, responses: int = 40, gamma: int = 4,
                     seed: int = 0, exit_fraction: float = 0.5, confidences: ExitConfidences | None = None) -> dict:
    """The sensitivity grid for one regime: per (per-token acceptance probability, agreement) every
    mode's summary (its acceptance and tokens per round measured on the simulated rounds), the paper's
    client-only pre-drafting beside ours, and the per-token probability the paper's figure implies here.
    `confidences`: the exit's confidences the rounds carry (a replay's, `exit_confidences`); without,
    the calibrated adaptive has nothing to trust an exit on and never pre-drafts on a shown verdict."""
    profile = load_regime(regime_name)
    regime = sim_regime(regime_name, profile, exit_fraction=exit_fraction)
    grid = []
    for a in token_acceptance_probs:
        for g in agreements:
            make = lambda: bernoulli_jobs(responses, tokens, a, g, seed, confidences=confidences)  # noqa: E731
            s = run_modes(regime, make, gamma=gamma, max_new_tokens=tokens, seed=seed)
            grid.append({"token_acceptance_prob": a, "agreement": g, "summary": s,
                         "reduction": {m: reduction(s, m) for m in s if m != "cloud"},
                         "client_only_reduction": client_only_reduction(regime, make, s["cloud"]["ttc_s"]["mean"],
                                                                        gamma, tokens, seed),
                         "predraft_gain": 1 - s["spec-ee-pre"]["ttc_s"]["mean"] / s["spec-ee"]["ttc_s"]["mean"],
                         "adaptive": adaptive_check(s)})
    paper = PAPER.get(regime_name) or {}
    implied = implied_token_acceptance_prob(regime, paper["spec-ee-pre"], 0.7, tokens, min(responses, 20), gamma,
                                            seed, confidences) if "spec-ee-pre" in paper else None
    return {"regime": regime_name, "description": profile.description, "paper": PAPER.get(regime_name),
            "tokens": tokens, "responses": responses, "gamma": gamma, "exit_fraction": exit_fraction,
            "link": {"rtt_s": regime.rtt_s, "jitter_s": regime.jitter_s}, "grid": grid,
            "confidences": None if confidences is None else {
                "layer": confidences.layer, "right": len(confidences.right), "wrong": len(confidences.wrong)},
            "implied_token_acceptance_prob": implied,
            "implied_acceptance": None if implied is None else acceptance_share(implied, gamma)}


def fleet(regime_name: str, robots=(1, 2, 4, 8, 16), token_acceptance_prob: float = 0.575, agreement: float = 0.7,
          tokens: int = 32, responses: int = 10, gamma: int = 4, seed: int = 0,
          modes=("cloud", "spec-ee-pre")) -> dict:
    """N robots, one GPU, batched verification: mean TTC, per-token latency and GPU s per token."""
    profile = load_regime(regime_name)
    regime = sim_regime(regime_name, profile)
    rows = []
    for mode in modes:
        for n in robots:
            out = simulate_fleet(regime, mode, lambda i: bernoulli_jobs(responses, tokens, token_acceptance_prob,
                                                                         agreement, seed * 1000 + i),
                                 n, gamma, tokens, seed, batched=True)
            recs = out["records"]
            rows.append({"mode": mode, "robots": n, "ttc_s": statistics.mean(r.ttc_s for r in recs),
                         "per_token_s": statistics.mean(r.ttc_s / r.tokens for r in recs),
                         "gpu_s_per_token": out["gpu_busy_s"] / out["tokens"],
                         "gpu_utilisation": out["gpu_busy_s"] / out["makespan_s"]})
    return {"regime": regime_name, "token_acceptance_prob": token_acceptance_prob,
            "acceptance": acceptance_share(token_acceptance_prob, gamma), "agreement": agreement, "tokens": tokens,
            "responses_per_robot": responses, "rows": rows}


# -- calibration against a replay -------------------------------------------------------------------
def _rounds(trace: list[dict], layers: int | None) -> list[Round]:
    return [Round(r["drafted"], r["accepted"], r["early_layer"] is not None, r["agreed"],
                  r["early_layer"] / layers if r["early_layer"] is not None and layers else None,
                  r.get("alternative"), r.get("reused", 0), r.get("forced", 0), r["early_layer"],
                  1.0 if r.get("early_confidence") is None else r["early_confidence"], tuple(tuple(x) for x in r.get("labels", ())))
            for r in trace]


def decoding(config: dict) -> dict:
    """The DecodeConfig fields of a replay run the simulated robot follows: its exit threshold and
    calibration, its unshown pre-drafts, its reused answers and its draft_grammar (runs from before
    an option had it off)."""
    return {"draft_grammar": config.get("draft_grammar", "off"), "reuse_answers": config.get("reuse_answers", 0),
            "predraft_min_hit": config.get("predraft_min_hit", 0.0),
            **{k: config[k] for k in ("exit_threshold", "exit_miss_target", "exit_bound_confidence",
                                      "reuse_max_tokens") if k in config}}


def _forced_model(trace: list[dict]) -> dict:
    """BernoulliRounds' share of drafted tokens the grammar forced, as a run measured it."""
    drafted = sum(x["drafted"] - x.get("reused", 0) for x in trace)
    forced = sum(x.get("forced", 0) for x in trace)
    return {"forced": forced / drafted} if forced and drafted else {}


def _reuse_model(trace: list[dict]) -> dict:
    """BernoulliRounds' reuse parameters as a run measured them: the share of rounds a recent answer
    extended, by how many tokens (mean), each accepted with the probability giving the share of
    them the target accepted after all the drafted ones."""
    reused = [x for x in trace if x.get("reused")]
    if not reused:
        return {}
    tokens = max(1, round(statistics.mean(x["reused"] for x in reused)))
    share = sum(min(x["reused"], max(0, x["accepted"] - (x["drafted"] - x["reused"]))) for x in reused) \
        / sum(x["reused"] for x in reused)
    return {"reuse": len(reused) / len(trace), "reuse_tokens": tokens,
            "reuse_token_prob": token_acceptance_prob(share, tokens)}


def jobs_from_replay(result: dict, mode: str, seed: int = 0) -> list[Job]:
    """The replay's responses of `mode` as jobs, each with its own recorded rounds; extra rounds (a
    different draft length) from a Bernoulli model with the run's own acceptance and agreement."""
    recs = [r for r in result["records"] if r["mode"] == mode]
    if not recs:
        raise ValueError(f"the replay has no {mode} responses (modes: {sorted({r['mode'] for r in result['records']})})")
    drafted = sum(r["drafted"] for r in result["records"])
    acceptance = sum(r["accepted"] for r in result["records"]) / drafted if drafted else 0.0
    rounds = [x for r in result["records"] for x in r["round_trace"]]
    trace = [x for x in rounds if x["early_layer"] is not None]
    agreement = sum(x["agreed"] for x in trace) / len(trace) if trace else 0.0
    missed = [x for x in trace if not x["agreed"]]
    # of the rounds whose EARLY missed, the share whose FINAL was the EARLY's alternative of rank 1, 2
    alternatives = tuple(sum(x.get("alternative") == rank for x in missed) / len(missed) for rank in (1, 2)) \
        if missed and result["config"].get("predraft_branches", 1) > 1 else ()
    rng = random.Random(seed)
    return [Job(r["tokens"], RecordedRounds(_rounds(r["round_trace"], result["target_layers"]),
                                            BernoulliRounds(token_acceptance_prob(acceptance, result["config"]["gamma"]),
                                                            agreement, rng, alternatives=alternatives,
                                                            **_reuse_model(rounds), **_forced_model(rounds))),
                r["first_action_token"], r["frame"], r["repeat"]) for r in recs]


def calibrate(result: dict, seed: int = 0) -> dict:
    """Simulate a replay run (same regime, link, traces, warm-up) and compare mean TTC mode by mode.

    Two things are taken from the run instead of the profile, because the pipeline does not emulate
    them: frame capture -> prompt (JPEG, image processor) and the draft's prefill (DraftEngine has
    no pacer hook for it, so it runs at this machine's speed in every regime)."""
    cfg = result["config"]
    profile = load_regime(cfg["regime"])
    if profile is None:
        raise ValueError("calibration needs a replay run under a named regime (timings emulated), not native")
    recs = result["records"]
    encode = statistics.median(r["start_offset_s"] for r in recs)
    spec = [r for r in recs if r["timeline"] and r["timeline"]["drafts"]]
    prefill = statistics.median(r["timeline"]["drafts"][0]["start"] - r["start_offset_s"] for r in spec) if spec else 0.0
    profile = dataclasses.replace(profile, draft_prefill_ms=prefill * 1000)
    regime = sim_regime(cfg["regime"], profile, LinkSpec(**cfg["link"]), encode_s=encode)
    rows = []
    for mode in dict.fromkeys(r["mode"] for r in recs):
        jobs = jobs_from_replay(result, mode, seed)
        warm = cfg.get("warmup", 0)
        sims = simulate(regime, mode, [copy.deepcopy(jobs[0]) for _ in range(warm)] + jobs, cfg["gamma"],
                        cfg["max_new_tokens"], seed, branches=cfg.get("predraft_branches", 1),
                        decode=decoding(cfg))[warm:]
        m = statistics.mean(r["ttc_s"] for r in recs if r["mode"] == mode)
        p = statistics.mean(r.ttc_s for r in sims)
        rows.append({"mode": mode, "measured_ttc_s": m, "predicted_ttc_s": p, "error": p / m - 1,
                     "within_10pct": abs(p / m - 1) <= 0.10})
    return {"regime": cfg["regime"], "transport": result["transport"], "encode_s": encode,
            "draft_prefill_s": prefill, "rows": rows, "all_within_10pct": all(r["within_10pct"] for r in rows)}


def recorded(regime_name: str, result: dict, gamma: int = 4, seed: int = 0, exit_fraction: float = 0.5) -> dict:
    """Every mode in `regime_name`, on the frames and recorded rounds of a replay (its spec-ee-pre
    responses, or the first speculative mode it ran): its acceptance and exits (and fan-out, reused
    answers and the grammar's forced tokens, as the replay ran them), another machine's timing."""
    source = next((m for m in ("spec-ee-pre", "adaptive", "spec-ee", "spec")
                   if any(r["mode"] == m for r in result["records"])), None)
    if source is None:
        raise ValueError("the replay has no speculative responses: no rounds to replay")
    profile = load_regime(regime_name)
    regime = sim_regime(regime_name, profile, exit_fraction=exit_fraction)
    max_new = result["config"]["max_new_tokens"]
    summary = run_modes(regime, lambda: jobs_from_replay(result, source, seed), gamma=gamma, max_new_tokens=max_new,
                        seed=seed, branches=result["config"].get("predraft_branches", 1),
                        decode=decoding(result["config"]))
    return {"regime": regime_name, "source_mode": source, "replay_regime": result["regime"],
            "responses": len(jobs_from_replay(result, source, seed)), "summary": summary,
            "reduction": {m: reduction(summary, m) for m in summary if m != "cloud"}}
