"""The world's tokenizer: word-level (``tokenizers`` WordLevel) wrapped as a ``PreTrainedTokenizerFast``.

Words split on white space; every punctuation mark is its own token, except ``\\boxed{`` which stays
whole so boxed answers are three tokens (``\\boxed{``, the object, ``}``) and decode to text that
``answers.extract_boxed`` reads. Decoding joins tokens with single spaces. Padding is on the left (batched
generation), and the chat template renders ``<|user|> ... <eos> <|assistant|>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edit_grpo_trl.data.world.chat import CHAT_INSTRUCTION, CHAT_TEMPLATE, EOS, PAD, SPECIAL_TOKENS, UNK
from edit_grpo_trl.data.world.prompts import RECALL_SPLITS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from edit_grpo_trl.data.world.world import KnowledgeWorld

SPLIT_PATTERN = r"\\boxed\{|[^\w\s]"
EXTRA_WORDS = ("\\", "{", "}", ".", ",", ":", "?")


def pre_tokenizer():
    """White space split, then every punctuation mark (or a whole ``\\boxed{``) isolated."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")]
    )


def world_words(world: KnowledgeWorld) -> list[str]:
    """Every word of the world's text (corpus, every recall prompt, the chat instruction), sorted."""
    splitter = pre_tokenizer()
    texts = [*world.corpus(), CHAT_INSTRUCTION, *EXTRA_WORDS]
    texts += [item.prompt for split in RECALL_SPLITS for item in world.fact_prompts(split)]
    words: set[str] = set()
    for text in texts:
        for marker in SPECIAL_TOKENS:
            text = text.replace(marker, " ")
        words.update(piece for piece, _ in splitter.pre_tokenize_str(text))
    return sorted(words)


def build_tokenizer(world: KnowledgeWorld) -> PreTrainedTokenizerFast:
    """The world's tokenizer: specials first (pad 0, eos 1, unk 2, role markers), then the sorted words."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *world_words(world)])}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizer()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # no "##" pieces: words joined by spaces
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD, EOS, UNK)],
        padding_side="left",
        model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
