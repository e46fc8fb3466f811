"""The models in models/: they load, answer sim frames in the action grammar, and decode losslessly."""
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from spec_edge_cloud.control.actions import parse_answer
from spec_edge_cloud.decoding.client import SpecClient
from spec_edge_cloud.decoding.link import InProcessLink
from spec_edge_cloud.decoding.modes import GREEDY_LOSSLESS, DecodeConfig
from spec_edge_cloud.decoding.target import TargetEngine
from spec_edge_cloud.decoding.verifier import VerifierService
from spec_edge_cloud.modeling import smollm2
from spec_edge_cloud.modeling.bundle import load_bundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.family import IMAGE_SIZE
from spec_edge_cloud.sim import episode
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.vocab import instruction
from spec_edge_cloud.sim.world import Go2World
from spec_edge_cloud.training import sim_eval
from spec_edge_cloud.training.prompts import instruction_prompts
from spec_edge_cloud.training.spec_eval import target_greedy
from spec_edge_cloud.training.text_pair import DRAFT_DIR, EXITS_DIR, pair_dirs

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def engine():
    return TargetEngine.from_dir(MODELS / "target")


@pytest.fixture(scope="module")
def draft():
    return load_bundle(MODELS / "draft")


@pytest.fixture(scope="module")
def frames():
    """Head-camera views of held-out rooms: at the start, and after the expert has walked a while."""
    world = Go2World()
    camera = HeadCamera(world.model, 128)
    out = []
    try:
        for seed in sim_eval.heldout_seeds(3, 2024):
            episode.start(world, seed)
            goal = world.layout.goal_object
            out.append((camera.render(world.data), instruction(goal.colour, goal.shape)))
            episode.run_with_expert(world, camera, timeout_s=3.0)
            out.append((camera.render(world.data), instruction(goal.colour, goal.shape)))
    finally:
        camera.close()
    return out


def test_shipped_pair_loads_with_one_vocabulary_and_trained_exits(engine, draft):
    target = engine.bundle
    assert type(target.model).__name__ == type(draft.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert target.tokenizer_fingerprint() == draft.tokenizer_fingerprint()
    assert engine.heads is not None and engine.heads.trained and engine.heads.layers == [2, 4, 6]
    assert engine.parts.num_layers == 8
    t_cfg, d_cfg = target.model.config.text_config, draft.model.config.text_config
    assert d_cfg.num_hidden_layers == 4 < t_cfg.num_hidden_layers  # cut from the target: its first 3 layers + last
    frame = np.zeros((128, 128, 3), np.uint8)  # a head-camera frame: both see the same 16 image tokens
    assert target.image_token_count(target.vision_inputs(frame)) == draft.image_token_count(draft.vision_inputs(frame))
    assert target.vision_inputs(frame)["image_grid_thw"].tolist() == [[1, IMAGE_SIZE // 14, IMAGE_SIZE // 14]]
    card = json.loads((MODELS / "target" / "card.json").read_text())
    assert card["sim"]["target"]["success_rate"] >= 0.5 * card["sim"]["expert"]["success_rate"]
    assert card["speculation"]["lossless_mismatches"] == []
    for d in (MODELS / "target", MODELS / "draft", MODELS / EXITS_DIR, MODELS / DRAFT_DIR):
        assert "## " in (d / "README.md").read_text()


def test_shipped_models_answer_sim_frames_in_the_action_grammar(engine, draft, frames):
    for image, text in frames:
        colour_object = " ".join(text.split()[-2:])
        for bundle in (engine.bundle, draft):
            answer = bundle.decode(target_greedy(bundle, bundle.encode(text, image), 40))
            observation, actions = parse_answer(answer)
            assert colour_object in observation, (text, answer)
            assert actions, answer


def test_every_greedy_mode_with_the_shipped_pair_equals_the_target_alone(engine, draft, frames):
    for image, text in frames:
        prompt = draft.encode(text, image)
        reference = target_greedy(engine.bundle, prompt, 40)
        for mode in GREEDY_LOSSLESS:
            link = InProcessLink(VerifierService(engine), rtt_s=0.01)
            try:
                config = DecodeConfig(mode=mode, gamma=4, max_new_tokens=40, exit_threshold=0.3)
                response = SpecClient(draft, link, config).generate(prompt)
            finally:
                link.close()
            assert response.tokens == reference, f"{mode} differs from the target alone on {text!r}"
            assert response.verified


def test_smollm2_exit_heads_and_draft_layer_fit_the_target():
    heads = ExitHeads.load(MODELS / EXITS_DIR)
    assert heads.trained and heads.layers == [8, 15, 22]
    assert heads.adapters["8"].linear.weight.shape == (576, 576)
    meta = json.loads((MODELS / DRAFT_DIR / "draft.json").read_text())
    assert 1 <= meta["keep"] < 30 and meta["target"] == smollm2.GGUF_FILE
    layer = load_file(str(MODELS / DRAFT_DIR / "draft_layer.safetensors"))
    assert layer["mlp.up_proj.weight"].shape == (1536, 576) and layer["self_attn.k_proj.weight"].shape == (192, 576)


def test_smollm2_pair_decodes_losslessly_in_every_greedy_mode():
    """On a fresh machine this first builds the dequantized cache from the installed GGUF (about a minute)."""
    draft_dir, target_dir, exits_dir = pair_dirs(MODELS)
    engine = TargetEngine.from_dir(target_dir, exits_dir)
    draft = load_bundle(draft_dir)
    prompt = draft.encode(instruction_prompts("heldout")[0])
    reference = target_greedy(engine.bundle, prompt, 12)
    for mode in GREEDY_LOSSLESS:
        link = InProcessLink(VerifierService(engine))
        try:
            response = SpecClient(draft, link, DecodeConfig(mode=mode, gamma=4, max_new_tokens=12,
                                                            exit_threshold=0.3)).generate(prompt)
        finally:
            link.close()
        assert response.tokens == reference, mode
