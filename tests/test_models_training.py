"""Training the model family: each piece on tiny real models, and `spec-edge-cloud train --quick` end to end."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spec_edge_cloud import cli
from spec_edge_cloud.control.actions import parse_answer
from spec_edge_cloud.modeling import family, layer_draft, smollm2
from spec_edge_cloud.modeling.bundle import ModelBundle, load_bundle
from spec_edge_cloud.modeling.exit_heads import ExitHeads
from spec_edge_cloud.modeling.layers import decoder_parts
from spec_edge_cloud.modeling.exit_training import agreement, train_exit_heads
from spec_edge_cloud.modeling.text_teacher import own_answers, sampled_answers, teacher_batch
from spec_edge_cloud.modeling.tiny import tiny_bundle
from spec_edge_cloud.modeling.vlm_training import EncodedExamples, Example, TrainConfig, answer_logits, train
from spec_edge_cloud.sim import episode, expert
from spec_edge_cloud.sim.camera import HeadCamera
from spec_edge_cloud.sim.dataset import episode_seed
from spec_edge_cloud.sim.world import Go2World
from spec_edge_cloud.training import prompts, sim_eval
from spec_edge_cloud.training.data import task_words
from spec_edge_cloud.training.text_pair import TextBudget
from spec_edge_cloud.training.vlm_family import Budget, train_family

SHIPPED = Path(__file__).resolve().parents[1] / "models"


def _examples(n: int) -> list[Example]:
    rng = np.random.default_rng(0)
    answers = ["red ball ahead . walk 1.2 . stop .", "no blue box in view . turn left 60 ."]
    return [Example(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), "go to the red ball", answers[i % 2])
            for i in range(n)]


def test_family_tokenizer_covers_the_task_language_one_token_per_word():
    bundle = family.new_vlm(family.TARGET_SHAPE, family.family_tokenizer(task_words()), seed=0)
    text = "purple cylinder ahead right . turn right 35 . walk 2.4 . strafe left 0.3 . stop ."
    ids = bundle.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split()) and bundle.tokenizer.unk_token_id not in ids
    assert bundle.decode(ids) == text
    with pytest.raises(ValueError, match="outside the vocabulary"):
        EncodedExamples(bundle, [Example(_examples(1)[0].image, "go to the red ball", "red ball yonder .")])


def test_lm_training_learns_image_conditioned_answers_and_distillation_follows_the_teacher():
    tok = family.family_tokenizer(task_words())
    teacher = family.new_vlm(family.VLMShape(2, 64, 1, 32), tok, seed=0)
    data = EncodedExamples(teacher, _examples(4))
    batch = data.batch([0, 1, 2, 3])
    before = torch.nn.functional.cross_entropy(answer_logits(teacher.model, batch), batch.targets).item()
    train(teacher, data, TrainConfig(steps=40, batch=4, lr=5e-3, log_every=1000), log=lambda s: None)
    after = torch.nn.functional.cross_entropy(answer_logits(teacher.model, batch), batch.targets).item()
    assert after < 0.5 * before
    from spec_edge_cloud.modeling.vlm_training import greedy_answers, teacher_logits
    assert all(parse_answer(a) for a in greedy_answers(teacher, data))

    student = family.new_vlm(family.VLMShape(1, 32, 1, 32), tok, seed=1)
    soft = teacher_logits(teacher, data)
    assert [t.shape[0] for t in soft] == data.answer_lengths()

    def kl() -> float:
        with torch.no_grad():
            s = torch.log_softmax(answer_logits(student.model, batch), -1)
            t = torch.softmax(torch.cat(soft).float(), -1)
            return torch.nn.functional.kl_div(s, t, reduction="batchmean").item()
    start = kl()
    train(student, data, TrainConfig(steps=30, batch=4, lr=5e-3, kd_weight=0.8, log_every=1000), teacher=soft,
          log=lambda s: None)
    assert kl() < 0.5 * start
    with pytest.raises(ValueError, match="teacher"):
        train(student, data, TrainConfig(steps=1, kd_weight=0.5), log=lambda s: None)


def test_a_vlm_draft_cut_from_the_target_keeps_its_vision_tower_first_layers_and_last_and_answers_an_image():
    target = family.new_vlm(family.TARGET_SHAPE, family.family_tokenizer(task_words()), seed=0)
    draft = ModelBundle(layer_draft.cut_draft(target.model, keep=2), target.tokenizer, target.image_processor)
    parts, tparts = decoder_parts(draft.model), decoder_parts(target.model)
    assert parts.num_layers == 3 == draft.model.config.text_config.num_hidden_layers
    for mine, theirs in ((0, 0), (1, 1), (2, tparts.num_layers - 1)):
        assert torch.equal(parts.layers[mine].mlp.up_proj.weight, tparts.layers[theirs].mlp.up_proj.weight)
    visual, tvisual = draft.model.model.visual.state_dict(), target.model.model.visual.state_dict()
    assert visual.keys() == tvisual.keys() and all(torch.equal(visual[k], tvisual[k]) for k in visual)
    batch = EncodedExamples(draft, _examples(2)).batch([0, 1])
    with torch.no_grad():
        logits = answer_logits(draft.model, batch)
    assert logits.shape == (batch.targets.numel(), len(target.tokenizer)) and torch.isfinite(logits).all()


def test_layer_draft_is_cut_from_the_target_trained_by_kl_and_rebuilt_from_its_stored_layer(tmp_path):
    target = tiny_bundle("llama", vocab=40, layers=4, hidden=64, seed=3, logit_scale=4.0)
    prompt_ids = [target.encode(f"w{i} w{i + 1} w{i + 2}") for i in range(6)]
    answers = own_answers(target, prompt_ids, max_new_tokens=8, batch_size=4)
    assert all(len(s) > n for s, n in zip(answers.sequences, answers.prompt_lens))
    teach = teacher_batch(target, answers, [1, 2])
    assert teach.target.shape[0] == sum(answers.answer_lengths()) == teach.hidden[1].shape[0]
    with pytest.raises(ValueError, match="exit layers"):
        teacher_batch(target, answers, [4])

    draft = ModelBundle(layer_draft.cut_draft(target.model, keep=1), target.tokenizer)
    parts, tparts = decoder_parts(draft.model), decoder_parts(target.model)
    assert parts.num_layers == 2
    assert torch.equal(parts.layers[0].mlp.up_proj.weight, tparts.layers[0].mlp.up_proj.weight)
    assert torch.equal(parts.layers[1].mlp.up_proj.weight, tparts.layers[3].mlp.up_proj.weight)

    def kl() -> float:
        with torch.no_grad():
            rows = torch.cat([draft.model(input_ids=torch.tensor([s])).logits[0, n - 1: len(s) - 1]
                              for s, n in zip(answers.sequences, answers.prompt_lens)])
            return torch.nn.functional.kl_div(torch.log_softmax(rows, -1), torch.softmax(teach.target, -1),
                                              reduction="batchmean").item()
    start = kl()
    layer_draft.train_layer_draft(draft, answers, teach, steps=40, lr=3e-3, batch=4, log=lambda s: None)
    assert kl() < 0.7 * start
    assert torch.equal(parts.layers[0].mlp.up_proj.weight, tparts.layers[0].mlp.up_proj.weight)  # frozen

    layer_draft.save_trained_layer(draft.model, tmp_path / "layer", note="test")
    rebuilt = layer_draft.build_draft(target.model, tmp_path / "layer")
    for (name, a), (_, b) in zip(draft.model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a.to(torch.float16).float(), b) if ".layers.1." in name else torch.equal(a, b), name
    target.save(tmp_path / "target")
    out = layer_draft.build_draft_dir(tmp_path / "target", tmp_path / "layer", tmp_path / "draft")
    loaded = load_bundle(out)
    assert loaded.tokenizer_fingerprint() == target.tokenizer_fingerprint()
    assert layer_draft.build_draft_dir(tmp_path / "target", tmp_path / "layer", tmp_path / "draft") == out
    with pytest.raises(FileNotFoundError):
        layer_draft.build_draft(target.model, tmp_path / "nothing")


def test_sampled_answers_carry_the_teacher_forced_states_and_teach_exits():
    """Generation's own hidden states (left-padded, batched) are the teacher-forcing ones, so sampled
    text is labelled at no second pass; exits trained on them (final layer kept as the norm's
    output) agree better on the teacher-forced states."""
    target = tiny_bundle("llama", vocab=40, layers=4, hidden=64, seed=3, logit_scale=4.0)
    parts = decoder_parts(target.model)
    prompt_ids = [target.encode(" ".join(f"w{(i * 7 + j) % 30}" for j in range(2 + i % 3))) for i in range(8)]
    answers, teach = sampled_answers(target, prompt_ids, 8, [1, 2], temperature=1.0, batch_size=4, seed=5)
    again, _ = sampled_answers(target, prompt_ids, 8, [1, 2], temperature=1.0, batch_size=4, seed=5)
    assert again.sequences == answers.sequences and teach.normed
    ref = teacher_batch(target, answers, [1, 2])
    assert teach.positions == ref.positions == sum(answers.answer_lengths())
    for k in (1, 2):
        assert torch.allclose(teach.hidden[k].float(), ref.hidden[k], atol=2e-2, rtol=1e-2)
    assert torch.equal(teach.logits(parts).argmax(-1), ref.logits(parts).argmax(-1))
    heads = ExitHeads([1, 2], target.hidden_size, rank=8)
    before = agreement(heads, target, ref)
    train_exit_heads(heads, target, teach, steps=60, lr=1e-2, batch=64)
    after = agreement(heads, target, ref)
    assert all(after[k] > before[k] for k in (1, 2)), (before, after)
    with pytest.raises(ValueError, match="exit layers"):
        sampled_answers(target, prompt_ids, 2, [4])


def test_closed_loop_runner_moves_only_on_parsed_answers():
    world = Go2World()
    camera = HeadCamera(world.model, 128)
    try:
        seed = sim_eval.heldout_seeds(1, 0)[0]
        episode.start(world, seed)
        start = world.pose()
        outcome, answers, unparsed = sim_eval.run_planner(world, camera, lambda img, text: sim_eval.Answer.instant("red ball ahead . walk 9.5 ."),
                                                          timeout_s=1.5)
        assert outcome.reason == "timeout" and answers == len(unparsed) >= 2
        assert np.hypot(world.pose()[0] - start[0], world.pose()[1] - start[1]) < 0.1
        episode.start(world, seed)
        outcome, answers, unparsed = sim_eval.run_planner(
            world, camera, lambda img, text: sim_eval.Answer.instant(expert.answer(world, camera)), timeout_s=40)
        assert outcome.success and answers >= 1 and not unparsed
    finally:
        camera.close()


def test_heldout_rooms_and_prompts_are_disjoint_from_training():
    train_rooms = {episode_seed(0, i) for i in range(400)}
    held = sim_eval.heldout_seeds(50, 0, exclude=train_rooms)
    assert len(set(held)) == 50 and not set(held) & train_rooms
    assert set(sim_eval.heldout_seeds(3, 0, exclude={held[0]})).isdisjoint({held[0]})
    train_p, held_p = prompts.instruction_prompts("train"), prompts.instruction_prompts("heldout")
    assert not set(prompts.TRAIN_SUBJECTS) & set(prompts.HELDOUT_SUBJECTS)
    assert not any(s in p for s in prompts.HELDOUT_SUBJECTS for p in train_p) and len(held_p) >= 24
    with pytest.raises(ValueError):
        prompts.instruction_prompts("test")
    words = ["snowfall", "maple", "teapot", "rivers", "kettle", "violin", "harbor", "Dinosaurs", "x1"]
    broad = prompts.broad_prompts(words, 200, seed=3)
    assert broad == prompts.broad_prompts(words, 200, seed=3) != prompts.broad_prompts(words, 200, seed=4)
    used = {w for w in ("kettle", "violin", "harbor") if any(w in b for b in broad)}
    assert used == {"kettle", "violin", "harbor"}
    assert not any(w in b.lower() for w in ("snow", "maple", "tea", "river", "dinosaur", "x1") for b in broad)
    with pytest.raises(ValueError, match="two usable words"):
        prompts.broad_prompts(["snow", "tea"], 1, seed=0)


def test_smollm2_gguf_is_found_without_import_and_the_cache_follows_the_env(monkeypatch, tmp_path):
    import sys
    path = smollm2.gguf_path()
    assert path.name == smollm2.GGUF_FILE and path.stat().st_size > 50_000_000
    assert smollm2.PACKAGE not in sys.modules
    monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path))
    assert smollm2.cache_root() == tmp_path


def test_train_cli_quick_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "models"
    assert cli.main(["train", "--only", "vlm", "--quick", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    target, draft = load_bundle(out / "target"), load_bundle(out / "draft")
    assert target.tokenizer_fingerprint() == draft.tokenizer_fingerprint()
    heads = ExitHeads.load(out / "target")
    assert heads.trained and heads.layers == [2, 4, 6]
    card = json.loads((out / "target" / "card.json").read_text())
    assert set(card["sim"]) == {"expert", "target", "draft"} and card["speculation"]["lossless_mismatches"] == []
    assert "task success" in (out / "target" / "README.md").read_text()
    assert "VLM pair saved" in capsys.readouterr().out
    assert card["training"]["target"]["contrast"]["examples"] >= 1
    # the draft is cut from the trained target (its first layer and its last) and keeps its vision tower
    assert decoder_parts(draft.model).num_layers == 2 == card["shapes"]["draft"]["layers"]
    assert card["training"]["draft"]["keep"] == 1
    assert "first 1 layer(s) and its last" in (out / "draft" / "README.md").read_text()
    assert draft.model.config.vision_config.depth == target.model.config.vision_config.depth
    assert card["training"]["target"]["contrast"]["close_examples"] >= 1   # the quick budget takes the options
    assert card["training"]["target"]["contrast"]["repeat"] == 2
    assert "each look-alike view counted 2 times" in (out / "target" / "README.md").read_text()
    assert card["exit_agreement"]["rounds"] >= 1 and card["training"]["exits"]["ce_weight"] > 0
    # the exit step alone on the saved pair (what a retrained target re-runs): new heads, their figures
    # and the speculation re-measured, the rest of the card kept
    assert cli.main(["train", "--only", "exits", "--quick", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    again = json.loads((out / "target" / "card.json").read_text())
    assert again["sim"] == card["sim"] and again["speculation"]["lossless_mismatches"] == []
    assert "--only exits" in again["training"]["exits"]["command"] and "first_exit" in again["speculation"]
    assert not (tmp_path / "work" / "contrast-s0").exists()   # the views the target trained on: every goal's
    assert "Re-run alone: `spec-edge-cloud train" in (out / "target" / "README.md").read_text()
    assert cli.main(["train", "--only", "exits", "--quick", "--out", str(out), "--seed", "1",
                     "--work", str(tmp_path / "work")]) == 2
    assert "trained with seed 0, not 1" in capsys.readouterr().err
    assert cli.main(["train", "--only", "vlm", "--quick", "--out", str(out),
                     "--dataset", str(tmp_path / "missing")]) == 2
    # a pair that went through the contrast stage cannot go through it again
    resumed = tmp_path / "resumed"
    assert cli.main(["train", "--only", "vlm", "--quick", "--out", str(resumed), "--work", str(tmp_path / "work"),
                     "--resume", str(out)]) == 2
    assert "already went through the contrast stage" in capsys.readouterr().err
    # a pair from before the stage existed (its card without it): the earlier stages' record is carried over
    before = json.loads((out / "target" / "card.json").read_text())
    del before["training"]["target"]["contrast"]
    (out / "target" / "card.json").write_text(json.dumps(before))
    # (in bfloat16, issue 13's `train --device/--dtype`: mixed precision, weights saved in float32)
    assert cli.main(["train", "--only", "vlm", "--quick", "--out", str(resumed), "--work", str(tmp_path / "work"),
                     "--resume", str(out), "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert load_bundle(resumed / "target").dtype == torch.float32
    resumed_card = json.loads((resumed / "target" / "card.json").read_text())
    assert resumed_card["speculation"]["lossless_mismatches"] == []
    again = resumed_card["training"]
    assert again["resumed_from"] == str(out) and "resumed from" in capsys.readouterr().out
    assert again["target"]["dagger"] == card["training"]["target"]["dagger"]
    assert again["draft"] == {**card["training"]["draft"], "seconds": again["draft"]["seconds"]}
    assert again["target"]["contrast"]["steps"] == 2 and "--resume" in (resumed / "target" / "README.md").read_text()
    # a target trained with another budget (the shipped one) cannot resume the quick recipe
    assert cli.main(["train", "--only", "vlm", "--quick", "--out", str(resumed), "--work", str(tmp_path / "work"),
                     "--resume", str(SHIPPED)]) == 2
    assert "cannot resume" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["train", "--quick", "--out", str(out), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_train_cli_quick_text_pair_records_agreement_on_training_answers_beside_held_out(tmp_path, monkeypatch):
    """The SmolLM2 recipe end to end at the tiny budget. Its cards carry the exits' agreement on the
    training prompts' own answers beside the held-out one: the gap between the two is what held the
    held-out figure down (issue 16), so every retraining reports it."""
    target = smollm2.target_dir()  # the shared cache (built once); the quick draft goes to a scratch cache
    cache = tmp_path / "cache" / "smollm2"
    cache.mkdir(parents=True)
    (cache / "target").symlink_to(target)
    monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path / "cache"))
    out = tmp_path / "models"
    assert cli.main(["train", "--only", "text", "--quick", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    exits = json.loads((out / "smollm2-exits" / "card.json").read_text())["exits"]
    assert set(exits["agreement_training_answers"]) == set(exits["agreement"]) == {"8", "15", "22"}
    assert all(0.0 <= v <= 1.0 for v in exits["agreement_training_answers"].values())
    assert ExitHeads.load(out / "smollm2-exits").meta["agreement_training_answers"] == exits["agreement_training_answers"]
    assert "training prompts' own answers" in (out / "smollm2-exits" / "README.md").read_text()
    # speculation measured at the fixed draft length and with the draft stopping at a doubtful token
    card = json.loads((out / "smollm2-draft" / "card.json").read_text())
    fixed, stopped = card["speculation"], card["speculation_stopped"]
    assert (fixed["draft_min_confidence"], stopped["draft_min_confidence"]) == (0.0, TextBudget().draft_min_confidence)
    assert stopped["lossless_mismatches"] == [] and stopped["drafted"] <= fixed["drafted"]
    readme = (out / "smollm2-draft" / "README.md").read_text()
    assert f"--draft-min-confidence {stopped['draft_min_confidence']:g}" in readme


def test_a_contrast_stage_that_would_drop_its_views_is_refused(tmp_path):
    with pytest.raises(ValueError, match="contrast_repeat must be >= 1"):
        train_family(tmp_path / "models", tmp_path / "work", 0, Budget(contrast_repeat=0))
