"""The embedded default VLM family: shapes of the target and the draft, built from Hugging Face classes.

Both are Qwen2VLForConditionalGeneration, the architecture of Qwen2-VL-2B/7B, so the engines that
serve them serve real checkpoints unchanged. They share one word-level tokenizer and one image
processor fixed to IMAGE_SIZE x IMAGE_SIZE (16 image tokens), so a prompt the draft encodes on the
robot is token for token the prompt the target verifies in the cloud.

The target is deep enough for early exits to matter. The draft is cut from the trained target (its
first layers and its last, the same vision tower: layer_draft.cut_draft) and distilled toward it, so
the robot runs a fraction of the target's decoder on what the target's own vision tower sees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .bundle import ModelBundle
from .tiny import image_processor, tiny_qwen2vl
from .tokenizer import build_word_tokenizer

IMAGE_SIZE = 112          # processor input (the sim's 128x128 frames are resized): 8x8 patches -> 16 tokens
MAX_POSITIONS = 256       # image (18) + instruction + answer stay far below this


@dataclass(frozen=True)
class VLMShape:
    layers: int
    hidden: int
    vision_depth: int
    vision_width: int

    def to_dict(self) -> dict:
        return asdict(self)


TARGET_SHAPE = VLMShape(layers=8, hidden=128, vision_depth=2, vision_width=64)


def family_tokenizer(words: list[str]):
    """One token per word of the task language (plus the specials that frame an image)."""
    return build_word_tokenizer(sorted(set(words), key=words.index))


def new_vlm(shape: VLMShape, tokenizer, seed: int) -> ModelBundle:
    """A randomly initialised member of the family (trained afterwards; logits left at their natural scale)."""
    model = tiny_qwen2vl(tokenizer, layers=shape.layers, hidden=shape.hidden, vision_depth=shape.vision_depth,
                         vision_width=shape.vision_width, seed=seed, logit_scale=1.0, max_positions=MAX_POSITIONS)
    return ModelBundle(model, tokenizer, image_processor(IMAGE_SIZE))


def parameter_count(bundle: ModelBundle) -> int:
    return sum(p.numel() for p in bundle.model.parameters())
