"""Ghost inner products: cosines between per-sample weight gradients without forming them.

For a linear layer ``y = W x`` applied at every position ``t`` of a sequence, the gradient of a scalar
``L_i`` (here: sample ``i``'s completion log-likelihood) with respect to ``W`` is

    G_i = sum_t delta_{i,t} x_{i,t}^T,     delta_{i,t} = dL_i / dy_{i,t},

so the inner product of two samples' gradients is

    <G_i, G_j> = sum_{t,s} (delta_{i,t} . delta_{j,s}) (x_{i,t} . x_{j,s}).

That costs ``T_i T_j (d_in + d_out)`` instead of the ``d_out x d_in`` matrix per sample (50M entries
for Qwen3-8B's ``down_proj``). The inputs ``x`` come from a forward hook and the output gradients
``delta`` from one batched backward of the summed log-likelihoods: samples do not interact, so one
backward gives every sample's own ``delta``.

Padded positions must carry ``x = 0`` or ``delta = 0``; :func:`mask_features` zeroes both.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 24  # bound on the (rows x cols x T x S) intermediate, about 64 MB in float32


def mask_features(inputs: torch.Tensor, output_grads: torch.Tensor, mask: torch.Tensor):
    """Zero the features of padded positions. Shapes: (N, T, d_in), (N, T, d_out), (N, T)."""
    if inputs.shape[:2] != output_grads.shape[:2] or inputs.shape[:2] != mask.shape:
        raise ValueError(
            f"inputs {tuple(inputs.shape)}, output_grads {tuple(output_grads.shape)} and mask "
            f"{tuple(mask.shape)} must agree on (samples, positions)"
        )
    keep = mask.to(inputs.dtype).unsqueeze(-1)
    return inputs * keep, output_grads * keep.to(output_grads.dtype)


def ghost_inner_products(
    inputs_a: torch.Tensor, grads_a: torch.Tensor, inputs_b: torch.Tensor, grads_b: torch.Tensor
) -> torch.Tensor:
    """``<G_i, G_j>`` for every ``i`` in set a and ``j`` in set b: an (N_a, N_b) matrix.

    Args are (N, T, d_in) layer inputs and (N, T, d_out) output gradients, already masked. Computed in
    float32 or better, in chunks of rows so the (rows, N_b, T_a, T_b) intermediates stay bounded.
    """
    dtype = torch.promote_types(inputs_a.dtype, torch.float32)
    inputs_a, grads_a = inputs_a.to(dtype), grads_a.to(dtype)
    inputs_b, grads_b = inputs_b.to(dtype), grads_b.to(dtype)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, inputs_b.size(0) * inputs_a.size(1) * inputs_b.size(1)))
    blocks = []
    for start in range(0, inputs_a.size(0), rows_per_chunk):
        stop = start + rows_per_chunk
        input_gram = torch.einsum("itd,jsd->ijts", inputs_a[start:stop], inputs_b)
        grad_gram = torch.einsum("itd,jsd->ijts", grads_a[start:stop], grads_b)
        blocks.append((input_gram * grad_gram).sum(dim=(2, 3)))
    if not blocks:
        return torch.zeros(0, inputs_b.size(0), dtype=dtype, device=inputs_a.device)
    return torch.cat(blocks, dim=0)


def ghost_squared_norms(inputs: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """``||G_i||_F^2`` for each sample: (N,). Each sample is paired only with itself."""
    dtype = torch.promote_types(inputs.dtype, torch.float32)
    inputs, grads = inputs.to(dtype), grads.to(dtype)
    input_gram = torch.einsum("itd,isd->its", inputs, inputs)
    grad_gram = torch.einsum("itd,isd->its", grads, grads)
    return (input_gram * grad_gram).sum(dim=(1, 2))


def alignment_cosines(
    sample_inputs: torch.Tensor,
    sample_grads: torch.Tensor,
    sample_groups: torch.Tensor,
    anchor_inputs: torch.Tensor,
    anchor_grads: torch.Tensor,
    anchor_groups: torch.Tensor,
) -> torch.Tensor:
    """``cos(G_i, g_c(i))`` where ``g_c`` is the mean gradient of the anchor sequences of group ``c``.

    ``sample_groups`` (N,) and ``anchor_groups`` (M,) are integer group ids (the edit case). A sample
    whose group has no anchor, or whose own or anchor gradient has zero norm, gets 0, never NaN.
    Features must be masked already (:func:`mask_features`). Returns (N,) in float32 or better.
    """
    dtype = torch.promote_types(sample_inputs.dtype, torch.float32)
    cosines = torch.zeros(sample_inputs.size(0), dtype=dtype, device=sample_inputs.device)
    if sample_inputs.size(0) == 0 or anchor_inputs.size(0) == 0:
        return cosines
    sample_norms = ghost_squared_norms(sample_inputs, sample_grads).clamp_min(0).sqrt()
    for group in torch.unique(sample_groups).tolist():
        anchors = anchor_groups == group
        if not anchors.any():
            continue
        members = sample_groups == group
        a_inputs, a_grads = anchor_inputs[anchors], anchor_grads[anchors]
        count = a_inputs.size(0)
        # <G_i, g_c> = mean_a <G_i, G_a>;  ||g_c||^2 = mean_{a,b} <G_a, G_b>
        dots = ghost_inner_products(sample_inputs[members], sample_grads[members], a_inputs, a_grads).mean(
            dim=1
        )
        anchor_norm = ghost_inner_products(a_inputs, a_grads, a_inputs, a_grads).sum().div(count * count)
        anchor_norm = anchor_norm.clamp_min(0).sqrt()
        denominator = sample_norms[members] * anchor_norm
        cosines[members] = torch.where(
            denominator > 0, dots / denominator.clamp_min(1e-30), torch.zeros_like(dots)
        )
    return cosines
