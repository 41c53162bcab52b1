"""Key statistics: the second moment itself, the cache, and the errors when there is nothing to read."""

import json

import pytest
import torch

from edit_grpo_trl.editors.corpus import CorpusError, corpus_texts, parse_corpus
from edit_grpo_trl.editors.stats import KeyStatisticsError, compute_key_second_moments, load_key_statistics

TEXTS = ["Kalo was born in Paris .", "Mira plays the violin .", "Sute works for Rome", "the a is of"]


def test_second_moment_matches_the_keys(small_qwen3):
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    keys = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_hook(lambda m, a, o: keys.append(a[0][0]))
    with torch.no_grad():
        for text in TEXTS:
            model(input_ids=torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]]))
    hook.remove()
    stacked = torch.cat(keys).double()
    ((moment, count),) = compute_key_second_moments(
        model, tokenizer, [1], TEXTS, 10, show_progress=False
    ).values()
    assert count == stacked.shape[0]  # every real token, no padding
    assert torch.allclose(moment.double(), stacked.T @ stacked / count, atol=1e-6)


def test_cache_is_used_and_keyed(small_qwen3, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    first = load_key_statistics(
        model, tokenizer, [0, 1], str(corpus), 4, cache_dir=tmp_path / "c", show_progress=False
    )
    corpus.unlink()  # from now on only the cache can answer
    again = load_key_statistics(
        model, tokenizer, [0, 1], str(corpus), 4, cache_dir=tmp_path / "c", show_progress=False
    )
    assert all(torch.equal(first[layer], again[layer]) for layer in (0, 1))
    # Another sample count is another key: the cache cannot answer and the missing corpus is named.
    with pytest.raises(
        KeyStatisticsError, match=r"no cached key statistics for layer\(s\) \[0\].*does not exist"
    ):
        load_key_statistics(
            model, tokenizer, [0], str(corpus), 3, cache_dir=tmp_path / "c", show_progress=False
        )


def test_unreachable_hub_corpus_is_a_clear_error(small_qwen3, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(KeyStatisticsError, match="cannot read the Hub dataset 'wikimedia/wikipedia'"):
        load_key_statistics(
            small_qwen3.model,
            small_qwen3.tokenizer,
            [0],
            "wikipedia",
            10,
            cache_dir=tmp_path,
            show_progress=False,
        )


def test_corpus_names_and_bad_files(tmp_path):
    assert parse_corpus("hub:wikitext:wikitext-103-raw-v1").config == "wikitext-103-raw-v1"
    assert parse_corpus("world").kind == "world"
    with pytest.raises(CorpusError, match="unknown kind '.csv'"):
        parse_corpus(str(tmp_path / "a.csv"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: a record needs a string field 'text'"):
        list(corpus_texts(parse_corpus(str(bad))))
    with pytest.raises(CorpusError, match="needs a knowledge-world model folder"):
        list(corpus_texts(parse_corpus("world"), tmp_path))
