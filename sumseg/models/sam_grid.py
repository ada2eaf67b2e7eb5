"""SAM's mask decoder on a point grid, split at the IoU head so failing candidates cost less.

``MaskDecoder.predict_masks`` runs the two-way transformer, then upscales the image tokens and
multiplies them by the hypernetwork outputs (the mask logits), and scores the IoU token. The
predicted IoU depends on the transformer only, so :meth:`SumSam.grid_scores
<sumseg.models.sum_sam.SumSam.grid_scores>` runs the decoder in two stages per batch of grid points:
(1) :func:`transformer_stage`, the transformer and the IoU head for every point; (2)
:func:`mask_logits_stage`, the upscaling and the hypernetworks only for the points the caller keeps
(:mod:`sumseg.pipeline.amg_decoder`: at least one multimask output above the predicted-IoU threshold).

Two more savings in stage 1, both inside the two-way transformer's attention blocks (:func:`_layer`):
the first layer sees the same image tokens for every grid point (no mask prompt), so their
key/value/query projections are computed once per image instead of once per point; and the
image-to-token attention takes its softmax over the 7 tokens along a long axis. Everything else
calls the stock submodules in ``predict_masks``'s order (task prompt off); the outputs equal
``SumSam.decode(..., multimask=True)``'s to float rounding (tested: |Δ| ~ 1e-6).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock

if TYPE_CHECKING:
    from sumseg.models.sum_sam import SumSam


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T, I) → (B, n, T, I / n), as ``Attention._separate_heads``."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _attend_shared_image(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, ·, ·)`` for token queries (N, T, C) over projected image keys/values (1, HW, I) shared by all N."""
    n_heads, (n, t, _) = attn.num_heads, q.shape
    qh = attn.q_proj(q).reshape(n * t, n_heads, -1).transpose(0, 1)  # (heads, N·T, d): one GEMM per head
    kh, vh = _heads(k, n_heads)[0], _heads(v, n_heads)[0]  # (heads, HW, d)
    a = torch.softmax((qh @ kh.transpose(1, 2)) / math.sqrt(qh.shape[-1]), dim=-1)
    return attn.out_proj((a @ vh).transpose(0, 1).reshape(n, t, -1))


def _attend_image_to_tokens(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` for image queries (B, HW, C), B = 1 (shared by all N) or N, over token keys/values
    (N, T, C) → (N, HW, C). The scores are laid out (N, heads, T, HW), so the softmax over the few
    tokens runs along a long contiguous axis (over T = 7 as the last axis it is the decoder's slowest op)."""
    qh = _heads(attn.q_proj(q), attn.num_heads)  # (B, heads, HW, d)
    kh, vh = _heads(attn.k_proj(k), attn.num_heads), _heads(attn.v_proj(v), attn.num_heads)  # (N, heads, T, d)
    a = torch.softmax((kh @ qh.transpose(-1, -2)) / math.sqrt(kh.shape[-1]), dim=-2)  # (N, heads, T, HW)
    o = a.transpose(-1, -2) @ vh  # (N, heads, HW, d)
    return attn.out_proj(o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1))


def _layer(layer: TwoWayAttentionBlock, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
           key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayAttentionBlock.forward`` for N token sets on one image. Keys (1, HW, C) shared by all N (the
    first layer) have their projections computed once; the image-to-token attention is
    :func:`_attend_image_to_tokens`; everything else is the block's own submodules, in its order."""
    if layer.skip_first_layer_pe:
        queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
    else:
        q = queries + query_pe
        queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    keys_pe = keys + key_pe
    cross = layer.cross_attn_token_to_image
    if keys.shape[0] == 1:
        out = _attend_shared_image(cross, queries + query_pe, cross.k_proj(keys_pe), cross.v_proj(keys))
    else:
        out = cross(q=queries + query_pe, k=keys_pe, v=keys)
    queries = layer.norm2(queries + out)
    queries = layer.norm3(queries + layer.mlp(queries))
    back = _attend_image_to_tokens(layer.cross_attn_image_to_token, keys_pe, queries + query_pe, queries)
    return queries, layer.norm4(keys + back)


def transformer_stage(model: SumSam, embeddings: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Stage 1 for n points (n, 2) in the input frame: (hs (n, T, C), src (n, HW, C), iou (n, 3)).

    ``TwoWayTransformer.forward``, layer by layer with :func:`_layer`: without a mask prompt (and
    without a task prompt) every grid point sees the same image tokens in the first layer.
    """
    md = model.sam.mask_decoder
    labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
    sparse, dense = model.prompt_embeddings((coords[:, None, :], labels[:, None]), None, None, None)
    output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    keys = (embeddings + dense[:1]).flatten(2).permute(0, 2, 1)  # (1, HW, C): one image, one dense prompt
    key_pe = model.sam.prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1)
    queries = tokens
    for layer in md.transformer.layers:
        queries, keys = _layer(layer, queries, keys, tokens, key_pe)
    attn_out = md.transformer.final_attn_token_to_image(q=queries + tokens, k=keys + key_pe, v=keys)
    hs = md.transformer.norm_final_attn(queries + attn_out)
    iou = md.iou_prediction_head(hs[:, 0, :])[:, 1:]  # multimask: outputs 1..3
    return hs, keys, iou


def mask_logits_stage(model: SumSam, hs: torch.Tensor, src: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Stage 2: (n, 3, L, L) multimask logits from the transformer outputs of n points."""
    md = model.sam.mask_decoder
    b, c = src.shape[0], src.shape[2]
    upscaled = md.output_upscaling(src.transpose(1, 2).view(b, c, *shape))
    mask_tokens = hs[:, 1 : 1 + md.num_mask_tokens, :]
    hyper_in = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1)
    b, c, h, w = upscaled.shape
    return (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)[:, 1:]
