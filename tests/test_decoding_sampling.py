"""Speculative sampling through the whole client: output follows the target's own distribution."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from decoding_fixtures import pair
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads

TEMPERATURE = 2.0


def target_joint(bundle, prompt_ids):
    """Exact p(t1, t2) of the target's own sampling at TEMPERATURE."""
    with torch.no_grad():
        p1 = torch.softmax(bundle.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1] / TEMPERATURE, -1)
        ids = torch.tensor([[*prompt_ids, t] for t in range(p1.shape[0])])
        p2 = torch.softmax(bundle.model(input_ids=ids).logits[:, -1] / TEMPERATURE, -1)
    return (p1[:, None] * p2).double().numpy()


def chi_square_pvalue(target, draft, prompt, link, mode, n=400, memory=lambda: None, gamma=2, grammar=None,
                      due=lambda: None, seen=None, **settings) -> float:
    """p-value of the pairs of tokens `n` seeded responses drew, against the target's own p(t1, t2);
    `memory()` gives each response's recent answers to draft from (decoding/reuse.py), `grammar` the
    tokens it forces (decoding/draft.py), `due()` when FINALs come (fan-out); `seen`, a list, gets
    each response's metrics."""
    joint = target_joint(target, prompt.input_ids)
    counts = np.zeros_like(joint)
    for seed in range(n):
        cfg = DecodeConfig(mode=mode, gamma=gamma, max_new_tokens=2, temperature=TEMPERATURE, seed=seed,
                           exit_threshold=0.0, **settings)
        resp = SpecClient(draft, link, cfg, memory=memory(), grammar=grammar, due=due()).generate(prompt)
        tokens = resp.tokens
        if seen is not None:
            seen.append(resp.metrics)
        if len(tokens) == 2:
            counts[tokens[0], tokens[1]] += 1
        else:  # EOS first: count it in the t1 row, column of EOS
            counts[tokens[0], tokens[0]] += 1
    eos = next(iter(target.eos_ids))
    expected = joint.copy()
    expected[eos, :] = 0
    expected[eos, eos] = joint[eos].sum()
    expected = expected.ravel() * n
    observed = counts.ravel()
    big = expected >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert big.sum() >= 4, "distribution too peaked for a meaningful test"
    return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def sampling_pair():
    target, draft = pair("llama", 21, vocab=4, noise=0.5)
    return target, draft, target.encode("w1 w2")


# the draft's whole distribution, its 2 likeliest tokens, the fewest holding 60%: exact all the same
TRUNCATIONS = [(0, 1.0), (2, 1.0), (0, 0.6)]


@pytest.mark.parametrize("top_k,top_p", TRUNCATIONS)
def test_sampled_pairs_of_tokens_follow_the_target(top_k, top_p):
    target, draft, prompt = sampling_pair()
    link = InProcessLink(VerifierService(TargetEngine(target, ExitHeads([2], target.hidden_size, 8))))
    try:
        pvalue = chi_square_pvalue(target, draft, prompt, link, "spec-ee-pre", draft_top_k=top_k, draft_top_p=top_p)
    finally:
        link.close()
    assert pvalue > 1e-3


def test_sampled_cloud_decoding_follows_the_target():
    """Cloud decoding (the target alone, one TOKEN per pass, no draft) samples the target's own
    distribution too (a pass with nothing drafted was refused as a sampling round without draft
    probabilities)."""
    target, draft, prompt = sampling_pair()
    link = InProcessLink(VerifierService(TargetEngine(target)))
    try:
        pvalue = chi_square_pvalue(target, draft, prompt, link, "cloud", n=200)
    finally:
        link.close()
    assert pvalue > 1e-3
