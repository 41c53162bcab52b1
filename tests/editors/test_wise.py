"""WISE plumbing on a small random Qwen3: routing, causal consistency, TIES, save/load, stage-2 freezing."""

from __future__ import annotations

import copy
import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind
from edit_grpo_trl.editors.arch import EditorConfigError
from edit_grpo_trl.editors.base import EditRecord
from edit_grpo_trl.editors.checkpoint import EditManifest, load_edited, load_edited_model, save_edited
from edit_grpo_trl.editors.tokens import encode, target_ids
from edit_grpo_trl.editors.wise import (
    WiseEditor,
    WiseHParams,
    WiseLinear,
    case_negatives,
    install_wise,
    margin_loss,
    prepare_wise_for_training,
    replay_sample,
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


# --- replay of earlier edits ----------------------------------------------------------------------------


def test_margin_loss_adds_in_scope_terms_for_replayed_anchors_only():
    in_scope, out_scope = torch.tensor([12.0]), torch.tensor([3.0, 8.0])
    base = margin_loss(in_scope, out_scope, [5.0, 10.0, 5.0])
    # relu(8 - 12 + 5) + mean(relu([3, 8] - 5)) + relu(10 - 12) = 1 + 1.5 + 0
    assert base.item() == pytest.approx(2.5)
    assert margin_loss(in_scope, out_scope, [5.0, 10.0, 5.0], torch.empty(0)).item() == pytest.approx(2.5)
    replayed = torch.tensor([6.0, 20.0], requires_grad=True)
    # + mean(relu(8 - [6, 20] + 5)) + mean(relu(10 - [6, 20])) = 3.5 + 2
    loss = margin_loss(in_scope, out_scope, [5.0, 10.0, 5.0], replayed)
    assert loss.item() == pytest.approx(2.5 + 3.5 + 2.0)
    loss.backward()
    assert replayed.grad[0] < 0 and replayed.grad[1] == 0  # only the faded anchor is pushed up


def test_replay_sample_draws_distinct_earlier_edits():
    rng = random.Random(0)
    assert replay_sample(0, 3, rng) == [] and replay_sample(5, 0, rng) == []
    assert replay_sample(2, 3, rng) == [0, 1]
    draws = [replay_sample(10, 3, rng) for _ in range(50)]
    assert all(len(set(d)) == 3 and all(0 <= i < 10 for i in d) for d in draws)
    assert len({i for d in draws for i in d}) == 10  # over the steps every earlier edit comes back


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_replay_must_be_a_count(small_qwen3, value):
    hparams = WiseHParams(layers=[1], replay=value)
    with pytest.raises(EditorConfigError, match="replay"):
        hparams.validate(small_qwen3.model.config)


def _replay_cases():
    return [
        EditCase("kalo", "Kalo", "Kalo was born in", ("Paris",)),
        EditCase("mira", "Mira", "Mira was born in", ("Oslo",)),
        EditCase("sute", "Sute", "Sute was born in", ("Lima",)),
    ]


def _small_wise_hparams(**changes) -> WiseHParams:
    """These tests' WISE settings on the small model (layer 1, Adam at learning rate 1, no norm limit)."""
    settings = dict(
        layers=[1],
        rewrite_module_tmp="model.layers.{}.mlp.down_proj",
        edit_lr=1.0,
        act_margin=[1.0, 2.0, 1.0],
        optimizer="adam",
        n_iter=30,
        mask_ratio=0.5,
        norm_constraint=None,
        context_templates=[],
        loc_samples=1,
        loc_pool=2,
    )
    return WiseHParams(**{**settings, **changes})


def _edited_with_replay(small_qwen3, replay: int, seen: list | None = None, cases=None):
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    hparams = _small_wise_hparams(replay=replay)
    editor = WiseEditor(hparams)
    editor._loc_texts = ["the piano of Lima is", "the violin of Rome is"]
    if seen is not None:

        def record(_module, _args, kwargs):
            if torch.is_grad_enabled():  # the optimization steps, not the closing measurement
                seen.append(kwargs["input_ids"])

        model.register_forward_pre_hook(record, with_kwargs=True)
    torch.manual_seed(0)
    result = editor.edit(model, tokenizer, cases or _replay_cases(), show_progress=False)
    return editor, result


def _object_loss(model, tokenizer, case) -> float:
    prompt, target = encode(tokenizer, case.prompt), target_ids(tokenizer, case.new_object)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0]
    return float(F.cross_entropy(logits[len(prompt) - 1 : -1], torch.tensor(target)))


def test_replay_trains_earlier_edits_in_later_steps_within_the_shard_mask(small_qwen3, monkeypatch):
    seen, masks = [], []
    tokenizer = small_qwen3.tokenizer
    original = WiseEditor._new_mask

    def record(editor, like):
        masks.append(original(editor, like))
        return masks[-1]

    monkeypatch.setattr(WiseEditor, "_new_mask", record)
    editor, result = _edited_with_replay(small_qwen3, replay=1, seen=seen)
    kalo = encode(tokenizer, "Kalo was born in") + target_ids(tokenizer, "Paris")
    first, later = seen[:30], seen[30:]
    assert all(ids.shape[0] == 2 for ids in first)  # the first edit has nothing to replay: anchor + one text
    assert all(ids.shape[0] == 4 for ids in later)  # + one earlier anchor and its unrelated text
    assert all(ids[1, : len(kalo)].tolist() == kalo for ids in later[:30])  # edit 2 replays edit 1
    (state,) = editor._state.values()
    assert [case.case_id for case, _ in state.history] == ["kalo", "mira", "sute"]
    # Replay moves only the open shard's masked entries, as the edits themselves.
    (wise,) = wise_modules(result.model).values()
    moved = (wise.side.weight - wise.weight).detach() != 0
    assert moved.any() and not (moved & (masks[0] == 0)).any()


def test_replay_keeps_earlier_edits_in_the_side_memory(small_qwen3):
    # The random model's logits are too small for any edit to win (the final norm bounds the residual):
    # a larger output head lets each edit reach its object, and later ones overwrite earlier ones.
    with torch.no_grad():
        small_qwen3.model.lm_head.weight.mul_(20.0)

    def side_losses(replay):
        copy_of = SimpleNamespace(model=copy.deepcopy(small_qwen3.model), tokenizer=small_qwen3.tokenizer)
        _, result = _edited_with_replay(copy_of, replay=replay)
        (wise,) = wise_modules(result.model).values()
        wise.router_threshold.data.fill_(-1.0)  # every token on the side memory: what it holds
        return [_object_loss(result.model, small_qwen3.tokenizer, case) for case in _replay_cases()]

    without, with_replay = side_losses(0), side_losses(2)
    assert without[-1] < 0.1 and with_replay[-1] < 1.0  # the last edit holds either way
    assert max(with_replay[:2]) < 1.0 < 3.0 < min(without[:2]), (with_replay, without)


def test_replay_skips_an_earlier_edit_of_the_same_prompt(small_qwen3):
    seen = []
    cases = [
        EditCase("kalo-paris", "Kalo", "Kalo was born in", ("Paris",)),
        EditCase("kalo-oslo", "Kalo", "Kalo was born in", ("Oslo",)),  # supersedes the first edit
    ]
    _edited_with_replay(small_qwen3, replay=1, seen=seen, cases=cases)
    assert len(seen) == 60 and all(ids.shape[0] == 2 for ids in seen)


def _case_with_locality_probes() -> EditCase:
    return EditCase(
        "kalo",
        "Kalo",
        "Kalo was born in",
        ("Paris",),
        probes=(
            Probe("Mira was born in", ("Oslo",), ProbeKind.LOCALITY, "neighborhood"),  # evaluation only
            Probe("Sute was born in", ("Lima",), ProbeKind.TRAIN_LOCALITY, "neighborhood"),
            Probe("Kalo plays the", ("piano",), ProbeKind.TRAIN_LOCALITY, "random"),  # the subject's own
            Probe("Sute plays the", ("violin",), ProbeKind.TRAIN_LOCALITY, "random"),
        ),
    )


def test_case_negatives_are_training_locality_probes_of_other_people_only():
    case = _case_with_locality_probes()
    assert case_negatives(case, 0) == []
    assert case_negatives(case, 1) == ["Sute was born in Lima"]
    # Never the evaluation's locality probe, never the edited subject's own prompt; no more than there are.
    assert case_negatives(case, 8) == ["Sute was born in Lima", "Sute plays the violin"]


def test_loc_case_probes_join_the_out_of_scope_rows_of_every_step(small_qwen3):
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    hparams = WiseHParams(
        layers=[1],
        rewrite_module_tmp="model.layers.{}.mlp.down_proj",
        edit_lr=1e-2,
        optimizer="adam",
        n_iter=3,
        mask_ratio=1.0,
        context_templates=[],
        loc_samples=1,
        loc_pool=1,
        loc_case_probes=2,
    )
    editor = WiseEditor(hparams)
    editor._loc_texts = ["the piano of Lima is"]
    seen = []
    model.register_forward_pre_hook(lambda _m, _a, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    editor.edit(model, tokenizer, [_case_with_locality_probes()], show_progress=False)
    expected = [
        encode(tokenizer, t)
        for t in ["the piano of Lima is", "Sute was born in Lima", "Sute plays the violin"]
    ]
    for ids in seen[
        :3
    ]:  # the optimization steps: the anchor row, then the unrelated text, then the negatives
        assert ids.shape[0] == 4
        assert [ids[1 + i, : len(row)].tolist() for i, row in enumerate(expected)] == expected


@pytest.mark.parametrize(
    ("field", "value"), [("loc_case_probes", -1), ("loc_case_probes", True), ("threshold_from", "min")]
)
def test_new_fields_are_validated(small_qwen3, field, value):
    hparams = WiseHParams(layers=[1], **{field: value})
    with pytest.raises(EditorConfigError, match=field):
        hparams.validate(small_qwen3.model.config)


def test_threshold_from_merged_rescores_every_edit_on_the_final_side_memory(small_qwen3):
    model, tokenizer = small_qwen3.model, small_qwen3.tokenizer
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # lets each edit reach its object (see the replay test above)
    hparams = _small_wise_hparams(
        act_ratio=0.9, n_iter=20, mask_ratio=1.0, router_score="token", threshold_from="merged"
    )
    editor = WiseEditor(hparams)
    editor._loc_texts = ["the piano of Lima is", "the violin of Rome is"]
    result = editor.edit(model, tokenizer, _replay_cases(), show_progress=False)
    (wise,) = wise_modules(result.model).values()
    # The threshold from the final side memory, computed here from the captured projection input: the smallest
    # token score over the positions that predict an edit's object, times act_ratio.
    captured = {}
    handle = wise.register_forward_hook(lambda _m, args, _o: captured.update(x=args[0]))
    lowest = math.inf
    with torch.no_grad():
        for case in _replay_cases():
            prompt, target = encode(tokenizer, case.prompt), target_ids(tokenizer, case.new_object)
            result.model(input_ids=torch.tensor([prompt + target]))
            x = captured["x"][0]
            scores = wise.distance(wise.project(x, wise.weight), wise.side(x))
            lowest = min(lowest, float(scores[len(prompt) - 1 : len(prompt) + len(target) - 1].min()))
            # act_ratio < 1: every edit's answer is read from the side memory
            assert wise.last_routes[0, len(prompt) - 1 : len(prompt) + len(target) - 1].all()
    handle.remove()
    assert math.isfinite(lowest)
    assert float(wise.router_threshold) == pytest.approx(0.9 * lowest, rel=1e-5)


class _CountingTokenizer:
    """The word tokenizer, counting how often each text is tokenized."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.calls: dict[str, int] = {}

    def __call__(self, text, **kwargs):
        self.calls[text] = self.calls.get(text, 0) + 1
        return self._tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_replay_tokenizes_each_text_once_per_stream(small_qwen3):
    counting = _CountingTokenizer(small_qwen3.tokenizer)
    _edited_with_replay(SimpleNamespace(model=small_qwen3.model, tokenizer=counting), replay=2)
    # 3 edits x 30 steps, each step with up to 2 replayed anchors and their texts: still one call per text.
    assert "Kalo was born in" in counting.calls and " Paris" in counting.calls
    assert set(counting.calls.values()) == {1}, counting.calls
