"""Small stand-in models for tests and benchmarks: built from a config in a second, never downloaded.

:func:`train_bpe_tokenizer` trains a real byte-level BPE tokenizer (the kind Qwen and Llama ship) on
the given texts and gives it a ChatML chat template; :func:`build_tiny_causal_lm` builds a randomly
initialised model of a real architecture (``qwen3``, ``qwen2``, ``llama``) whose module names match
the full-size model's, so editor hyperparameters, alignment modules and LoRA targets written for the
real model resolve on it; :func:`pretrain_tiny_lm` teaches it the texts and where they end, so its
generations stop as a real model's do. :func:`save_tiny_model` writes both as a Hugging Face folder.

Where a test wants to read every token, :func:`word_tokenizer` (a fixed vocabulary) and
:func:`train_word_tokenizer` (the words of some texts) give word-level tokenizers instead: one token per
word, ids in a known order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
WORD_SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
ARCHITECTURES = ("qwen3", "qwen2", "llama")


def json_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (keys and values), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)
    elif value is not None:
        yield str(value)


def texts_of_files(paths: Iterable[str | Path]) -> list[str]:
    """The strings of JSON files, and the lines of any other text file."""
    texts: list[str] = []
    for path in map(Path, paths):
        content = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            texts.extend(json_strings(json.loads(content)))
        else:
            texts.extend(line for line in content.splitlines() if line.strip())
    return texts


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes, seen or not
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _word_level_tokenizer(backend, chat: bool):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat:
        tokenizer.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _word_backend(vocabulary: dict[str, int] | None, split_punctuation: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = (
        pre_tokenizers.Whitespace() if split_punctuation else pre_tokenizers.WhitespaceSplit()
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return backend


def word_tokenizer(
    words: Iterable[str],
    special_tokens: Iterable[str] = WORD_SPECIAL_TOKENS,
    *,
    split_punctuation: bool = False,
    chat: bool = False,
):
    """A word-level tokenizer over a fixed vocabulary: ``special_tokens`` then ``words``, ids in that order
    (a repeated token keeps its first id).

    Text splits at white space, and also before and after punctuation with ``split_punctuation``. The
    special tokens must include ``<pad>``, ``<eos>`` and ``<unk>``; ``chat`` registers ``<|im_start|>`` and
    ``<|im_end|>`` as special tokens (added after the words unless listed) and sets a ChatML chat template.
    """
    tokens = dict.fromkeys([*special_tokens, *words])
    backend = _word_backend({token: index for index, token in enumerate(tokens)}, split_punctuation)
    return _word_level_tokenizer(backend, chat)


def train_word_tokenizer(
    texts: Iterable[str],
    special_tokens: Iterable[str] = WORD_SPECIAL_TOKENS,
    *,
    split_punctuation: bool = True,
    chat: bool = False,
):
    """A word-level tokenizer whose vocabulary is ``special_tokens`` and then every word of ``texts``
    (``tokenizers``' WordLevel trainer: most frequent first). Options as for :func:`word_tokenizer`."""
    from tokenizers import trainers

    backend = _word_backend(None, split_punctuation)
    backend.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=list(special_tokens)))
    return _word_level_tokenizer(backend, chat)


def build_tiny_causal_lm(
    model_type: str,
    vocab_size: int,
    num_layers: int = 2,
    hidden_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **config: Any,
):
    """A randomly initialised causal LM of ``model_type`` (``qwen3``, ``qwen2`` or ``llama``), in eval mode.

    ``config`` overrides any field of the model's config (heads, ``intermediate_size``, token ids, ...).
    The weights are created on ``device`` (a large shape need not pass through the CPU first).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type must be one of {', '.join(ARCHITECTURES)}, got {model_type!r}")
    heads = max(2, hidden_size // 16)
    settings = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        **({"head_dim": hidden_size // heads} if model_type == "qwen3" else {}),
        **config,
    }
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
    return model.eval()


def pretrain_tiny_lm(model, tokenizer, texts: Iterable[str], steps: int = 200, seed: int = 0) -> list[float]:
    """A few hundred AdamW steps of next-token prediction on ``texts``, each ended by the EOS token.

    A random model never emits EOS, so every generation runs to its length limit; after this it writes
    text shaped like ``texts`` and stops, as a real model does, and generation costs what it would.
    Returns the loss per step.
    """
    eos = tokenizer.eos_token_id
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"][:63] + [eos] for text in texts]
    rows = [row for row in rows if len(row) > 1]
    if not rows:
        raise ValueError("pretrain_tiny_lm needs at least one non-empty text")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        batch = [rows[i] for i in torch.randint(len(rows), (32,), generator=generator).tolist()]
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, row in enumerate(batch):
            input_ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row)] = torch.tensor(row)
        loss = model(input_ids=input_ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def save_tiny_model(
    folder: str | Path,
    model_type: str,
    texts: Iterable[str],
    dtype: torch.dtype = torch.float32,
    pretrain_steps: int = 0,
    **config: Any,
) -> Path:
    """Train a tokenizer on ``texts``, build a tiny ``model_type`` model for it (pretrained on ``texts`` for
    ``pretrain_steps`` steps when given), and save both to ``folder``."""
    folder = Path(folder)
    texts = list(texts)
    tokenizer = train_bpe_tokenizer(texts)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in ("<|endoftext|>", "<pad>")}
    model = build_tiny_causal_lm(
        model_type,
        len(tokenizer),
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<pad>"],
        bos_token_id=None,
        **config,
    )
    if pretrain_steps:
        pretrain_tiny_lm(model, tokenizer, texts, steps=pretrain_steps)
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


__all__ = [
    "ARCHITECTURES",
    "CHATML_TEMPLATE",
    "CHAT_TOKENS",
    "WORD_SPECIAL_TOKENS",
    "build_tiny_causal_lm",
    "json_strings",
    "pretrain_tiny_lm",
    "save_tiny_model",
    "texts_of_files",
    "train_bpe_tokenizer",
    "train_word_tokenizer",
    "word_tokenizer",
]
