"""SAM's mask decoder on a point grid, split at the IoU head so failing candidates cost less.

``MaskDecoder.predict_masks`` runs the two-way transformer, then upscales the image tokens and
multiplies them by the hypernetwork outputs (the mask logits), and scores the IoU token. The
predicted IoU depends on the transformer only, so :func:`decode_grid` runs the decoder in two
stages per batch of grid points: (1) the transformer and the IoU head for every point; (2) the
upscaling and the hypernetworks only for points with at least one multimask output above the
predicted-IoU threshold.

Two more savings in stage 1, both inside the two-way transformer's attention blocks (:func:`_layer`):
the first layer sees the same image tokens for every grid point (no mask prompt), so their
key/value/query projections are computed once per image instead of once per point; and the
image-to-token attention takes its softmax over the 7 tokens along a long axis. Everything else
calls the stock submodules in ``predict_masks``'s order (task prompt off); the outputs equal
``SumSam.decode(..., multimask=True)``'s to float rounding (tested: |Δ| ~ 1e-6).

SAM 2 (:class:`~sumseg.models.sum_sam2.SumSam2`) goes through the model interface instead
(:func:`_decode_grid_sam2`: ``SumSam2.predict`` on each batch of grid points, three outputs each), with
SAM 2's object score: a grid point whose object-score logit is ≤ 0 yields no candidate. That is
``SAM2Base``'s rule (its heads replace such a point's masks by ``NO_OBJ_SCORE`` = −1024, which the
generator's stability filter then drops as 0/0); Meta's image-mode ``SAM2AutomaticMaskGenerator`` (via
``SAM2ImagePredictor._predict``) and transformers' mask-generation pipeline do not consult the score. Its
IoUs are reported as −inf, so quantile calibration leaves them out (``amg.score_quantile``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock

from sumseg.errors import ConfigError
from sumseg.models.sum_sam import ImageFeatures, SumSam
from sumseg.models.sum_sam2 import SumSam2


@dataclass
class Candidates:
    """Multimask outputs of a grid that passed the predicted-IoU threshold, in (point, output) order.

    prompt: (K,) long index of the grid point; iou: (K,) float32 predicted IoU;
    logits: (K, L, L) float32 low-res logits over the padded S×S input.
    """

    prompt: torch.Tensor
    iou: torch.Tensor
    logits: torch.Tensor


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


def _transformer(model: SumSam, embeddings: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, ...]:
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


def _mask_logits(model: SumSam, hs: torch.Tensor, src: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Stage 2: (n, 3, L, L) multimask logits from the transformer outputs of n points."""
    md = model.sam.mask_decoder
    b, c = src.shape[0], src.shape[2]
    upscaled = md.output_upscaling(src.transpose(1, 2).view(b, c, *shape))
    mask_tokens = hs[:, 1 : 1 + md.num_mask_tokens, :]
    hyper_in = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1)
    b, c, h, w = upscaled.shape
    return (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)[:, 1:]


def _kept(iou: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """The stock generator's predicted-IoU rule: IoU > ``iou_thresh``, everything when it is ≤ 0."""
    return iou > iou_thresh if iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)


def _empty(all_iou: torch.Tensor, lowres: int) -> Candidates:
    return Candidates(torch.zeros(0, dtype=torch.long, device=all_iou.device), all_iou.new_zeros(0),
                      all_iou.new_zeros((0, lowres, lowres)))


def _decode_grid_sam2(model: SumSam2, features: ImageFeatures, coords: torch.Tensor, iou_thresh: float | None,
                      batch: int) -> tuple[torch.Tensor, Candidates]:
    """:func:`decode_grid` for SAM 2 through ``SumSam2.predict`` (module docstring: the object score)."""
    ious, prompts, kept_iou, logits = [], [], [], []
    for start in range(0, coords.shape[0], batch):
        pts = coords[start : start + batch].float()[:, None, :]
        n = pts.shape[0]
        labels = torch.ones(n, 1, dtype=torch.long, device=pts.device)
        index = torch.zeros(n, dtype=torch.long, device=pts.device)
        low, iou, obj = model.predict(features.take(index), (pts, labels), None, None, None, multimask=True)
        present = (obj > 0)[:, None].expand_as(iou)
        iou = torch.where(present, iou.float(), torch.full_like(iou, -torch.inf, dtype=torch.float))
        ious.append(iou)
        if iou_thresh is None:
            continue
        keep = _kept(iou, iou_thresh) & present
        prompts.append((torch.arange(n, device=pts.device) + start)[:, None].expand_as(keep)[keep])
        kept_iou.append(iou[keep])
        logits.append(low[keep].float())
    all_iou = torch.cat(ious)
    if not logits or not sum(len(x) for x in kept_iou):
        return all_iou, _empty(all_iou, model.image_size // 4)
    return all_iou, Candidates(torch.cat(prompts), torch.cat(kept_iou), torch.cat(logits))


@torch.inference_mode()
def decode_grid(
    model: SumSam | SumSam2, embeddings: torch.Tensor | ImageFeatures, coords: torch.Tensor,
    iou_thresh: float | None, batch: int = 64
) -> tuple[torch.Tensor, Candidates]:
    """Predicted IoUs of every grid candidate and the candidates that pass ``iou_thresh``.

    embeddings: (1, C, h, w) of one image; coords: (N, 2) xy points in the S×S input frame
    (float64, as ``SamAutomaticMaskGenerator`` passes them). The rule is the stock generator's:
    keep IoU > ``iou_thresh``, no filter when it is ≤ 0; ``None`` computes the IoUs only.
    Returns ((N, 3) float32 IoUs, the kept :class:`Candidates`). A SAM 2 model takes its
    :class:`ImageFeatures` (with the high-res levels) and also drops points of object score ≤ 0.
    """
    if isinstance(model, SumSam2):
        if not isinstance(embeddings, ImageFeatures):
            raise TypeError("a SAM 2 model decodes ImageFeatures (with their high-res levels)")
        return _decode_grid_sam2(model, embeddings, coords, iou_thresh, batch)
    if isinstance(embeddings, ImageFeatures):
        embeddings = embeddings.embeddings
    if model.is_hq:
        raise ConfigError(f"pseudo-labels need a SAM model; {model.name} is HQ-SAM (one output per prompt)")
    shape = tuple(embeddings.shape[-2:])
    ious, prompts, kept_iou, logits = [], [], [], []
    for start in range(0, coords.shape[0], batch):
        hs, src, iou = _transformer(model, embeddings, coords[start : start + batch])
        ious.append(iou)
        if iou_thresh is None:
            continue
        keep = _kept(iou, iou_thresh)
        rows = keep.any(1).nonzero().squeeze(1)
        if rows.numel():
            masks = _mask_logits(model, hs[rows], src[rows], shape)  # type: ignore[arg-type]
            sel = keep[rows]
            prompts.append((rows + start)[:, None].expand_as(sel)[sel])
            kept_iou.append(iou[rows][sel])
            logits.append(masks[sel])
    all_iou = torch.cat(ious)
    if not logits:
        return all_iou, _empty(all_iou, 4 * shape[0])
    return all_iou, Candidates(torch.cat(prompts), torch.cat(kept_iou), torch.cat(logits))
