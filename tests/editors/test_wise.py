"""WISE plumbing on a small random Qwen3: routing, causal consistency, TIES, save/load, stage-2 freezing."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from edit_grpo_trl.editors.base import EditRecord
from edit_grpo_trl.editors.checkpoint import EditManifest, load_edited, load_edited_model, save_edited
from edit_grpo_trl.editors.wise import (
    WiseLinear,
    install_wise,
    prepare_wise_for_training,
    router_scores,
    ties_merge,
    wise_modules,
    wise_training_defaults,
)
from edit_grpo_trl.generation import greedy_generate

MODULE = "model.layers.1.mlp.down_proj"


def _activations(model, tokenizer, text: str) -> torch.Tensor:
    captured = {}
    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(
        lambda _m, args, _o: captured.update(x=args[0])
    )
    with torch.no_grad():
        model(input_ids=torch.tensor([tokenizer(text)["input_ids"]]))
    handle.remove()
    return captured["x"][0]


def _routed_model(small_qwen3, threshold: float = 0.5, router_score: str = "mean") -> WiseLinear:
    """A side memory that differs from the main one only along the layer-1 MLP activation of "Kalo" at the
    start of a prompt (orthogonal to the activations of every other token of the test prompts)."""
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    key = _activations(model, tokenizer, "Kalo was born in")[0]
    others = torch.cat(
        [
            _activations(model, tokenizer, "Kalo was born in Paris")[1:],
            _activations(model, tokenizer, "Mira was born in Paris"),
            _activations(model, tokenizer, "Mira plays the"),
            _activations(model, tokenizer, "the violin of Mira is"),
            _activations(model, tokenizer, "the piano of Sute is"),
        ]
    )
    basis, _ = torch.linalg.qr(others.T)
    key = key - basis @ (basis.T @ key)
    wise = install_wise(model, MODULE, router_score=router_score)
    torch.manual_seed(1)
    direction = torch.randn(wise.out_features)
    with torch.no_grad():
        wise.side.weight.add_(torch.outer(direction, key / key.norm() ** 2) * 20.0)
        wise.router_threshold.fill_(threshold)
    return wise


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text)["input_ids"]])


def test_router_sends_the_keyed_prompt_to_the_side_memory_and_others_to_main(small_qwen3):
    wise = _routed_model(small_qwen3)
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    with torch.no_grad():
        model(input_ids=_ids(tokenizer, "Kalo was born in"))
        assert wise.last_routes[0].all()  # from the subject on, the running mean stays above the threshold
        model(input_ids=_ids(tokenizer, "Mira was born in"))
        assert not wise.last_routes.any()


def test_router_scores_pool_causally_and_continue_across_calls():
    distance = torch.tensor([[4.0, 1.0, 6.0, 2.0], [3.0, 5.0, 1.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])  # row 1: left padding
    expected = {
        "mean": [[4.0, 2.5, 11 / 3, 13 / 4], [0.0, 5.0, 3.0, 2.0]],
        "max": [[4.0, 4.0, 6.0, 6.0], [0.0, 5.0, 5.0, 5.0]],
        "token": [[4.0, 1.0, 6.0, 2.0], [0.0, 5.0, 1.0, 0.0]],
    }
    for mode, values in expected.items():
        scores, _ = router_scores(distance, valid, mode)
        assert torch.allclose(scores, torch.tensor(values)), mode
        # Decoding: the first three positions in one call, the last one continuing from its state.
        _, state = router_scores(distance[:, :3], valid[:, :3], mode)
        last, _ = router_scores(distance[:, 3:], valid[:, 3:], mode, *state)
        assert torch.allclose(last[:, 0], scores[:, 3]), mode
    with pytest.raises(ValueError):
        router_scores(distance, valid, "median")


@pytest.mark.parametrize("router_score", ["mean", "max", "token"])
def test_routing_is_the_same_teacher_forced_and_decoded_with_a_cache_and_padding(small_qwen3, router_score):
    wise = _routed_model(small_qwen3, threshold=0.2, router_score=router_score)
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    tokenizer.padding_side = "left"
    prompts = ["Kalo was born in", "the violin of Mira is"]
    completions = greedy_generate(model, tokenizer, prompts, max_new_tokens=3, stop_at_sentence_end=False)
    # Teacher-forced, one row at a time (no padding): the same greedy tokens come out.
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = tokenizer(prompt)["input_ids"]
        generated = tokenizer(completion)["input_ids"] if completion else []
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + generated])).logits[0]
        predicted = logits[len(ids) - 1 : len(ids) - 1 + len(generated)].argmax(-1).tolist()
        assert predicted == generated
    assert wise_modules(model) == {MODULE: wise}


def test_token_router_routes_only_the_keyed_position(small_qwen3):
    wise = _routed_model(small_qwen3, router_score="token")
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    with torch.no_grad():
        model(input_ids=_ids(tokenizer, "Kalo was born in"))
    # Only "Kalo" itself differs along the side memory's key; the mean router keeps every later position.
    assert wise.last_routes[0].tolist() == [True, False, False, False]


def test_ties_merge_keeps_disjoint_shards_and_elects_signs():
    base = torch.zeros(2, 3)
    first = torch.tensor([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    second = torch.tensor([[0.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    merged = ties_merge(base, [first, second], [0.5, 0.5], density=1.0)
    # Disjoint entries keep their value; at [1, 1] the sign election picks -2 (sum -1) and drops +1.
    assert torch.allclose(merged, torch.tensor([[1.0, 3.0, 0.0], [0.0, -2.0, 0.0]]))
    trimmed = ties_merge(base, [torch.tensor([[4.0, 1.0, 0.5], [0.1, 0.0, 0.0]])], [1.0], density=0.34)
    assert torch.count_nonzero(trimmed) == 2  # 34% of 6 entries: the two largest
    assert torch.allclose(ties_merge(base, [first, second], [1.0, 1.0], 1.0, "linear"), (first + second) / 2)


def _wise_manifest(source, **hparams) -> EditManifest:
    record = EditRecord(
        editor="wise",
        hparams={"layers": [1], **hparams},
        case_ids=["c1"],
        layers=[1],
        mode="sequential",
    )
    return EditManifest.from_record(record, source_model=str(source))


def test_save_load_evaluate_round_trip_gives_the_same_outputs(small_qwen3, tmp_path):
    wise = _routed_model(small_qwen3)
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    prompts = ["Kalo was born in", "Mira plays the", "the piano of Sute is"]
    before = greedy_generate(model, tokenizer, prompts, max_new_tokens=4, stop_at_sentence_end=False)
    with torch.no_grad():
        logits = model(input_ids=_ids(tokenizer, "Kalo was born in Paris")).logits
    folder = save_edited(model, tokenizer, _wise_manifest(tmp_path), tmp_path / "edited", tmp_path / "base")
    manifest = load_edited(folder).manifest
    assert manifest.wise["side_memory"] == [f"{MODULE}.side.weight"]
    assert manifest.wise["thresholds"][MODULE] == float(wise.router_threshold)

    loaded = load_edited_model(folder, dtype=torch.float32).eval()
    (rebuilt,) = wise_modules(loaded).values()
    assert torch.equal(rebuilt.side.weight, wise.side.weight) and float(rebuilt.router_threshold) == 0.5
    assert greedy_generate(loaded, tokenizer, prompts, max_new_tokens=4, stop_at_sentence_end=False) == before
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=_ids(tokenizer, "Kalo was born in Paris")).logits, logits)
    # A plain from_pretrained gives the main memory only: the unedited model.
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert not wise_modules(plain)
    with torch.no_grad():
        main_only = plain(input_ids=_ids(tokenizer, "Kalo was born in Paris")).logits
        wise.router_threshold.fill_(float("inf"))
        assert torch.equal(main_only, model(input_ids=_ids(tokenizer, "Kalo was born in Paris")).logits)
    assert wise_training_defaults(folder) == {"alignment_module": "mlp.down_proj.side"}
    assert wise_training_defaults(tmp_path / "base") == {}


def test_checkpoint_keeps_the_router_score(small_qwen3, tmp_path):
    wise = _routed_model(small_qwen3, router_score="token")
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    manifest = _wise_manifest(tmp_path, router_score="token")
    folder = save_edited(model, tokenizer, manifest, tmp_path / "edited", tmp_path / "base")
    (rebuilt,) = wise_modules(load_edited_model(folder, dtype=torch.float32)).values()
    assert rebuilt.router_score == wise.router_score == "token"


def test_stage2_trains_the_side_memory_only(small_qwen3):
    wise = _routed_model(small_qwen3)
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    trainable = prepare_wise_for_training(model)
    assert trainable == [f"{MODULE}.side.weight"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = _ids(tokenizer, "Kalo was born in Paris")
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {f"{MODULE}.side.weight"}
    # The recipe switch: the router's threshold trains too, through the straight-through gate.
    assert prepare_wise_for_training(model, train_router=True) == [
        f"{MODULE}.side.weight",
        f"{MODULE}.router_threshold",
    ]
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    assert wise.router_threshold.grad is not None


def test_gpt2_conv1d_projection_routes_through_the_same_module():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        wise = install_wise(model, "transformer.h.1.mlp.c_proj")
        assert wise.transposed and (wise.in_features, wise.out_features) == (64, 16)
        assert torch.equal(model(input_ids=ids).logits, before)  # nothing edited: the main memory
        wise.side.weight.add_(0.5)
        wise.router_threshold.fill_(0.0)
        routed = model(input_ids=ids).logits
    assert wise.last_routes.all() and not torch.allclose(routed, before)
