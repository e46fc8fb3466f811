"""Regression: a client answering several frames in edge mode (or falling back to it) must draft on
each frame's own prompt and image, never on the previous response's KV cache."""
from decoding_fixtures import pair, random_image
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.modes import DecodeConfig


def test_edge_mode_starts_every_response_from_its_own_prompt():
    _, draft = pair("qwen", 3)
    prompts = [draft.encode("w4 w9 w1", random_image(1)), draft.encode("w4 w9 w1", random_image(2)),
               draft.encode("w4 w7", random_image(3))]   # same text, other image; then a shorter prompt
    reused = SpecClient(draft, None, DecodeConfig(mode="edge", max_new_tokens=8))
    answers = [reused.generate(p).tokens for p in prompts]
    fresh = [SpecClient(draft, None, DecodeConfig(mode="edge", max_new_tokens=8)).generate(p).tokens for p in prompts]
    assert answers == fresh
    assert answers[0] != answers[1], "the images did not change the answer: the test lost its point"
