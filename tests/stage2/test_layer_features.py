"""The captured inputs and output gradients of a real model's MLP projection, fed to the ghost identity,
must reproduce the cosines of brute-force per-sample weight gradients (docs/design.md section 6)."""

import pytest
import torch

from edit_grpo_trl.stage2.ghost import alignment_cosines, ghost_squared_norms, mask_features
from edit_grpo_trl.stage2.layer_features import (
    AlignmentModuleError,
    capture_module_features,
    output_gradients,
    resolve_alignment_module,
)

from .conftest import make_model


def completion_logps(model, input_ids, attention_mask, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    loss_mask = torch.zeros_like(input_ids[:, 1:], dtype=torch.float32)
    width = completion_mask.size(1)
    loss_mask[:, -width:] = completion_mask.float()
    return (token_logps * loss_mask).sum(dim=1)


def padded_batch(prompts, completions, pad_id=0):
    p_width, c_width = max(map(len, prompts)), max(map(len, completions))
    rows, masks, c_masks = [], [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        left = [pad_id] * (p_width - len(prompt))
        right = [pad_id] * (c_width - len(completion))
        rows.append(left + prompt + completion + right)
        masks.append([0] * len(left) + [1] * (len(prompt) + len(completion)) + [0] * len(right))
        c_masks.append([1] * len(completion) + [0] * len(right))
    return torch.tensor(rows), torch.tensor(masks), torch.tensor(c_masks)


def test_ghost_cosines_match_brute_force_per_sample_gradients():
    model = make_model(seed=3, layers=3).float()
    name, module = resolve_alignment_module(model, 1, "mlp.down_proj")
    assert name == "model.layers.1.mlp.down_proj"
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def random_ids(n):
        return torch.randint(3, vocab, (n,), generator=generator).tolist()

    prompts = [random_ids(n) for n in (3, 5, 2, 4, 5)]
    completions = [random_ids(n) for n in (4, 1, 3, 2, 4)]  # padding on both sides
    input_ids, attention_mask, completion_mask = padded_batch(prompts, completions)

    with capture_module_features(module) as captured:
        total = completion_logps(model, input_ids, attention_mask, completion_mask).sum()
    (delta,) = output_gradients(total, captured)
    x, d = mask_features(captured.inputs[0], delta, attention_mask)

    # Brute force: each sample alone, unpadded, its own full weight gradient.
    brute = []
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = torch.tensor([prompt + completion])
        logp = completion_logps(
            model, ids, torch.ones_like(ids), torch.ones(1, len(completion), dtype=torch.long)
        )
        (grad,) = torch.autograd.grad(logp.sum(), module.weight)
        brute.append(grad)
    brute = torch.stack(brute)

    norms = ghost_squared_norms(x, d)
    relative = (norms - brute.pow(2).sum(dim=(1, 2))).abs().max() / brute.pow(2).sum(dim=(1, 2)).max()
    assert relative < 1e-5
    # Samples 0 and 1 align to sequence 2 (group 0); sample 2 to the mean of sequences 3 and 4 (group 1).
    groups = torch.tensor([0, 0, 1])
    anchor_groups = torch.tensor([0, 1, 1])
    cos = alignment_cosines(x[:3], d[:3], groups, x[2:], d[2:], anchor_groups)
    directions = {0: brute[2], 1: (brute[3] + brute[4]) / 2}
    expected = torch.stack(
        [
            torch.nn.functional.cosine_similarity(brute[i].flatten(), directions[g].flatten(), dim=0)
            for i, g in enumerate(groups.tolist())
        ]
    )
    assert ((cos - expected).abs() / expected.abs().clamp_min(1e-3)).max() < 1e-5


def test_hook_is_removed_and_the_model_is_unchanged_afterwards():
    model = make_model(seed=1)
    _, module = resolve_alignment_module(model, 0, "mlp.down_proj")
    ids = torch.tensor([[5, 6, 7, 8]])
    before = model(input_ids=ids).logits
    with capture_module_features(module):
        model(input_ids=ids)
    assert not module._forward_hooks
    torch.testing.assert_close(model(input_ids=ids).logits, before)


def test_layer_past_the_model_names_the_valid_range():
    model = make_model(layers=2)
    with pytest.raises(
        AlignmentModuleError,
        match=r"alignment_layer=5 is past the model: it has 2 decoder layers \(valid: 0-1\)",
    ):
        resolve_alignment_module(model, 5, "mlp.down_proj")


def test_missing_module_lists_the_linear_modules_there():
    model = make_model(layers=2)
    with pytest.raises(AlignmentModuleError, match="mlp.down_proj"):
        resolve_alignment_module(model, 0, "mlp.out_proj")


def test_peft_wrapped_module_resolves_to_the_lora_layer():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_model(layers=2), LoraConfig(r=2, target_modules=["down_proj"]))
    name, module = resolve_alignment_module(model, 1, "mlp.down_proj")
    assert name.endswith("layers.1.mlp.down_proj")
    assert hasattr(module, "base_layer")  # the LoRA wrapper, whose input/output cover base + adapter
