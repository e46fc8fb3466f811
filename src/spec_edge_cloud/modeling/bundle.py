"""A model directory as the engines see it: model + tokenizer (+ image processor for VLMs) + prompt encoding.

Models come only from local directories (no hub at run time): a Hugging Face directory with config,
safetensors weights and tokenizer files, optionally `preprocessor_config.json` for a VLM and
`exit_heads.*` for a target.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .placement import CPU_FP32, Placement


class ModelDirError(FileNotFoundError):
    """A model directory is missing, incomplete or holds unreadable files."""


@contextlib.contextmanager
def model_file_errors(path: Path):
    """Turn a corrupt or truncated weights/config file into a ModelDirError that names the directory."""
    from safetensors import SafetensorError
    try:
        yield
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"model files in {path} are corrupt or truncated ({type(exc).__name__}: {exc})") from None


@dataclass
class Prompt:
    """Token ids of the prompt (image placeholders expanded) and the RGB image they refer to, if any.
    `jpeg`: the JPEG bytes the image was decoded from, sent to the cloud in its place (modeling/jpeg.py)."""

    input_ids: list[int]
    image: np.ndarray | None = None
    vision: dict = field(default_factory=dict, repr=False)  # pixel_values, image_grid_thw (per bundle)
    jpeg: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.input_ids:
            raise ValueError("empty prompt: at least one token is needed")


def check_image(image: np.ndarray) -> np.ndarray:
    """Reject garbage early with a clear message: the model needs an HxWx3 uint8 RGB image."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if min(image.shape[:2]) < 28:
        raise ValueError(f"image too small ({image.shape[1]}x{image.shape[0]}): at least 28x28 pixels")
    return image


class ModelBundle:
    """Model, tokenizer and (for a VLM) image processor loaded from one directory."""

    def __init__(self, model: torch.nn.Module, tokenizer, image_processor=None, path: Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.path = path
        cfg = model.config
        self.image_token_id = getattr(cfg, "image_token_id", None)
        self.is_vlm = image_processor is not None and self.image_token_id is not None
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.max_positions = int(getattr(text_cfg, "max_position_embeddings", 2048))
        self.hidden_size = int(text_cfg.hidden_size)
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(text_cfg, "eos_token_id", None)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- prompts ---------------------------------------------------------------------------------
    def vision_inputs(self, image: np.ndarray) -> dict:
        out = self.image_processor(images=check_image(image), return_tensors="pt")
        return {"pixel_values": out["pixel_values"].to(self.device, self.dtype),
                "image_grid_thw": out["image_grid_thw"].to(self.device)}

    def image_token_count(self, vision: dict) -> int:
        merge = getattr(self.image_processor, "merge_size", 2)
        return int(vision["image_grid_thw"].prod().item()) // (merge * merge)

    def encode(self, text: str, image: np.ndarray | None = None, jpeg: bytes | None = None) -> Prompt:
        """Token ids for `text` (with the image's placeholder tokens in front for a VLM); `jpeg`: the
        bytes `image` was decoded from (`modeling.jpeg.roundtrip`), what the cloud is sent."""
        if not text or not text.strip():
            raise ValueError("empty prompt text")
        if image is not None and not self.is_vlm:
            raise ValueError(f"{self.path}: this model takes no image")
        if getattr(self.tokenizer, "chat_template", None) and not self.is_vlm:
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                     add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if isinstance(ids, Mapping) else ids)  # BatchEncoding is no dict
        else:
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        vision = {}
        if image is not None:
            vision = self.vision_inputs(image)
            tok = self.tokenizer
            start, end = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|vision_end|>")
            ids = [start] + [self.image_token_id] * self.image_token_count(vision) + [end] + list(ids)
        prompt = Prompt(list(ids), image, vision, jpeg if image is not None else None)
        self.check_length(len(prompt.input_ids))
        return prompt

    def attach_image(self, prompt: Prompt) -> Prompt:
        """Compute this bundle's vision inputs for a prompt made elsewhere (same ids, same image)."""
        if prompt.image is None:
            return Prompt(prompt.input_ids)
        if not self.is_vlm:
            raise ValueError(f"{self.path}: this model takes no image")
        vision = self.vision_inputs(prompt.image)
        n = sum(1 for t in prompt.input_ids if t == self.image_token_id)
        if n != self.image_token_count(vision):
            raise ValueError(f"prompt has {n} image tokens, the image needs {self.image_token_count(vision)}")
        return Prompt(prompt.input_ids, prompt.image, vision)

    def check_length(self, n: int) -> None:
        if n >= self.max_positions:
            raise ValueError(f"prompt of {n} tokens does not fit the context of {self.max_positions}")

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def words(self, ids: list[int]) -> list[str]:
        """Each token's own text (what the command parser consumes)."""
        return [self.tokenizer.decode([i], skip_special_tokens=True).strip() for i in ids]

    def save(self, directory: str | Path) -> None:
        """save_pretrained for model, tokenizer and image processor (safetensors, no pickles)."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(directory)
        self.path = Path(directory)

    # -- identity --------------------------------------------------------------------------------
    def tokenizer_fingerprint(self) -> str:
        vocab = sorted(self.tokenizer.get_vocab().items())
        specials = sorted(self.tokenizer.all_special_tokens)
        return hashlib.sha256(json.dumps([vocab, specials]).encode()).hexdigest()[:16]

    def model_fingerprint(self) -> str:
        return hashlib.sha256(self.model.config.to_json_string().encode()).hexdigest()[:16]


def check_same_tokenizer(draft: ModelBundle, target: ModelBundle) -> None:
    if draft.tokenizer_fingerprint() != target.tokenizer_fingerprint():
        raise ValueError(f"draft ({draft.path}) and target ({target.path}) tokenizers differ: speculative "
                         "decoding needs one vocabulary")


def load_bundle(directory: str | Path, placement: Placement = CPU_FP32) -> ModelBundle:
    """Load a local Hugging Face model directory (LLM or Qwen2-VL-style VLM) onto `placement`'s device
    in its precision, with PyTorch's SDPA attention; never touches a hub."""
    from transformers import (AutoConfig, AutoImageProcessor, AutoModelForCausalLM,
                              AutoModelForImageTextToText, AutoTokenizer)

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise ModelDirError(f"model directory {path} not found or has no config.json")
    if not (path / "tokenizer.json").is_file():
        raise ModelDirError(f"model directory {path} has no tokenizer.json (its tokenizer is saved there)")
    with model_file_errors(path):
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        is_vlm = hasattr(config, "vision_config")
        cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
        model = cls.from_pretrained(path, local_files_only=True, dtype=placement.torch_dtype,
                                    attn_implementation="sdpa")
        model.to(placement.device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    processor = None
    if is_vlm and (path / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return ModelBundle(model, tokenizer, processor, path)
