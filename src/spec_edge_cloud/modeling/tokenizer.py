"""A word-level tokenizer in Hugging Face format, for the embedded models' closed vocabulary.

The action language is a small closed set of words (actions, numbers, colours, objects), so one
token per word keeps answers short (fewer decoding steps) and makes every token a whole word the
command parser can consume the moment it is final.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab: dict[str, int] = {}
    for w in SPECIALS + list(words):
        if w not in vocab:
            vocab[w] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>",
                                   additional_special_tokens=SPECIALS[4:])
