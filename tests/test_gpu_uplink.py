"""The compact sampled uplink: a draft truncated to its likeliest tokens sends only their ids and
probabilities; sampling stays exact over real ZeroMQ sockets; the frames' sizes reach `decode --json`."""
import json

import pytest

from decoding_fixtures import pair
from spec_edge_cloud.cli import main
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.messages import DraftRequest
from spec_edge_cloud.decoding.modes import DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.tiny import tiny_bundle
from spec_edge_cloud.transport import protocol
from spec_edge_cloud.transport.client import LinkOptions, connect
from spec_edge_cloud.transport.server import ServerConfig, VerifierServer
from test_decoding_sampling import TRUNCATIONS, chi_square_pvalue, sampling_pair


class Recording:
    """A link that keeps what the robot sends (the messages themselves; sizes are taken from them)."""

    def __init__(self, link):
        self.link, self.sent = link, []

    def send(self, msg):
        self.sent.append(msg)
        self.link.send(msg)

    def recv(self, timeout):
        return self.link.recv(timeout)

    def close(self):
        self.link.close()


@pytest.mark.parametrize("top_k,top_p", TRUNCATIONS[1:])
def test_truncated_sampling_over_zeromq_follows_the_target(top_k, top_p):
    target, draft, prompt = sampling_pair()
    server = VerifierServer(TargetEngine(target, ExitHeads([2], target.hidden_size, 8)),
                            ServerConfig(bind="tcp://127.0.0.1:0", log_rounds=False))
    endpoint = server.start()
    link = connect(endpoint, draft.tokenizer_fingerprint(), LinkOptions())
    try:
        pvalue = chi_square_pvalue(target, draft, prompt, link, "spec", n=300, draft_top_k=top_k, draft_top_p=top_p)
    finally:
        link.close()
        server.stop()
    assert pvalue > 1e-3


def test_a_sampled_round_of_a_50000_word_vocabulary_goes_up_in_under_20_kb():
    target = tiny_bundle("llama", vocab=50_000, seed=3, hidden=32, layers=2)
    draft = tiny_bundle("llama", vocab=50_000, seed=4, hidden=32, layers=2)
    prompt = target.encode("w3 w4 w5")
    engine = TargetEngine(target, ExitHeads([1], target.hidden_size, 8))
    sizes = {}
    for top_k in (64, 0):
        link = Recording(InProcessLink(VerifierService(engine)))
        cfg = DecodeConfig(mode="spec", gamma=4, max_new_tokens=8, temperature=1.0, draft_top_k=top_k)
        try:
            assert SpecClient(draft, link, cfg).generate(prompt).verified
        finally:
            link.close()
        drafts = [m for m in link.sent if isinstance(m, DraftRequest) and m.tokens]
        sizes[top_k] = max(len(protocol.pack(m, 0, b"\0" * protocol.SENDER_BYTES)) for m in drafts)
    assert sizes[64] < 20_000, sizes
    assert sizes[0] > 50_000 * 4, sizes  # the whole distribution: what the truncation saves


def test_decode_json_reports_bytes_per_round(tmp_path, capsys):
    target, draft = pair("llama", 11, noise=0.15)
    target.save(tmp_path / "target")
    draft.save(tmp_path / "draft")
    args = ["decode", "--mode", "spec", "--draft", str(tmp_path / "draft"), "--target", str(tmp_path / "target"),
            "--prompt", "w3 w5", "--max-new-tokens", "8", "--json"]
    per_round = {}
    for temperature in ("0", "1.0"):
        assert main([*args, "--temperature", temperature]) == 0
        metrics = json.loads(capsys.readouterr().out)["metrics"]
        per_round[temperature] = metrics["bytes_up_per_round"], metrics["bytes_down_per_round"]
    assert 0 < per_round["0"][0] < per_round["1.0"][0]  # sampled DRAFTs carry their distributions
    assert per_round["0"][1] > 0
