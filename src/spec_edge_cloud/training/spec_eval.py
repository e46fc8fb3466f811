"""How well a draft/target pair speculates: acceptance, tokens per round, exit verdicts, losslessness.

Runs the real decoding core (SpecClient over an in-process link to a VerifierService) in `spec-ee`
mode with every exit reporting, over a set of prompts, and checks each response token for token
against the target's own greedy generate(): the model cards quote only figures measured this way.
Besides each exit's round verdicts, the verdict pre-drafting would use: per round, the first exit
whose confidence reaches the paper's fixed threshold (`DecodeConfig.exit_threshold`, spec-ee-pre's),
how often one does and how often its verdict is the FINAL's (read from the FINALs' exit labels).
"""
from __future__ import annotations

import time
from collections import defaultdict

import torch

from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.messages import Final
from spec_edge_cloud.decoding.metrics import tokens_per_round
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.bundle import ModelBundle, Prompt


@torch.no_grad()
def target_greedy(bundle: ModelBundle, prompt: Prompt, max_new_tokens: int) -> list[int]:
    """The reference: Hugging Face generate() on the target alone, greedy."""
    ids = torch.tensor([prompt.input_ids])
    kw = dict(prompt.vision, mm_token_type_ids=(ids == bundle.image_token_id).int()) if prompt.vision else {}
    out = bundle.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=sorted(bundle.eos_ids), pad_token_id=bundle.tokenizer.pad_token_id or 0,
                                **kw)
    return out[0, ids.shape[1]:].tolist()


def speculate(draft: ModelBundle, engine: TargetEngine, prompts: list[Prompt], gamma: int = 4,
              max_new_tokens: int = 40, check_lossless: bool = True, draft_min_confidence: float = 0.0) -> dict:
    """Aggregate metrics of `spec-ee` responses over `prompts` (exit threshold 0: every exit reports);
    `draft_min_confidence` > 0: each draft stops at its first token below that probability."""
    totals = defaultdict(int)
    agree, seen = defaultdict(int), defaultdict(int)
    mismatches = []
    first = defaultdict(int)   # the first exit at the fixed threshold: rounds with one, its verdict the FINAL's
    threshold = DecodeConfig().exit_threshold
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        link = InProcessLink(VerifierService(engine))
        trace: list = []
        try:
            config = DecodeConfig(mode="spec-ee", gamma=gamma, max_new_tokens=max_new_tokens, exit_threshold=0.0,
                                  draft_min_confidence=draft_min_confidence)
            response = SpecClient(draft, link, config).generate(prompt, trace=trace)
        finally:
            link.close()
        for _, event, details in trace:
            msg = details.get("msg")
            if event != "recv" or not isinstance(msg, Final):
                continue
            used = [(e, p) for e, p in sorted(zip(msg.exits, msg.exit_percent)) if p / 100 >= threshold][:1]
            first["rounds"] += 1
            for (_, k, b), _ in used:
                first["used"] += 1
                first["agree"] += (k, b) == (msg.accepted, msg.next_token)
        m = response.metrics
        for key in ("tokens", "rounds", "drafted", "accepted"):
            totals[key] += getattr(m, key)
        for layer, n in m.exit_total.items():
            seen[layer] += n
            agree[layer] += m.exit_agree[layer]
        if check_lossless and response.tokens != target_greedy(engine.bundle, prompt, max_new_tokens):
            mismatches.append(i)
    return {
        "responses": len(prompts), "gamma": gamma, "max_new_tokens": max_new_tokens,
        "draft_min_confidence": draft_min_confidence, **totals,
        "acceptance": totals["accepted"] / totals["drafted"] if totals["drafted"] else 0.0,
        "tokens_per_round": tokens_per_round(totals["accepted"], totals["rounds"]),
        "exit_verdict_agreement": {str(k): agree[k] / seen[k] for k in sorted(seen)},
        "first_exit": {"threshold": threshold, "rounds": first["rounds"], "used": first["used"],
                       "agreement": first["agree"] / first["used"] if first["used"] else None},
        "lossless_checked": check_lossless, "lossless_mismatches": mismatches,
        "seconds": round(time.perf_counter() - start, 1),
    }
