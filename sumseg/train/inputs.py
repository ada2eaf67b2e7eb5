"""The loop's ``inputs(draw, replica)`` of every run (``sumseg train``, ``sumseg pretrain``, ``sumseg refiner
train``) and the embedding cache a run shares across its ranks.

A call's inputs, in this order: this rank's images of draw ``draw`` (a :data:`SampleFn`: its own
generator of (seed, draw, rank)), their cached embeddings when the run has a cache, the batch collated on
the replica's device, and the step's generator :func:`~sumseg.train.schedule.step_generator` of (seed,
draw, rank) — handed to the step as an :class:`~sumseg.prompts.sampler.UncertaintySampler` (the SUM
step) or bare (the refiner step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import torch

from sumseg.data.embedding_cache import EmbeddingCache
from sumseg.data.images import content_key
from sumseg.data.records import ImageRecord
from sumseg.models.backbones import Backbone
from sumseg.prompts.sampler import UncertaintySampler
from sumseg.train.batch import MaskBatch, MaskSample, collate
from sumseg.train.distributed import Replica, main_first
from sumseg.train.loop import InputFn
from sumseg.train.schedule import MaskSource, draw_mixed, draw_samples, step_generator

SampleFn = Callable[[int, Replica], list[MaskSample]]
"""``samples(draw, replica)``: this rank's images of call ``draw``."""


def labelled_samples(source: MaskSource, seed: int, per_call: int) -> SampleFn:
    """``per_call`` images of ``source`` per call and rank (:func:`~sumseg.train.schedule.draw_samples`)."""
    return lambda draw, rep: draw_samples(source, seed, draw, rep.rank, rep.world, per_call)


def mixed_samples(sources: Sequence[MaskSource | None], share: Fraction, seed: int, per_call: int) -> SampleFn:
    """``per_call`` images per call and rank from [labelled, pseudo-labelled] sources, a ``share`` of them
    labelled (:func:`~sumseg.train.schedule.draw_mixed`)."""
    return lambda draw, rep: draw_mixed(sources, share, seed, draw, rep.rank, rep.world, per_call)


def step_inputs(samples: SampleFn, model: Backbone, seed: int, cache: EmbeddingCache | None = None,
                p_box: float | None = None) -> InputFn:
    """The loop's ``inputs(draw, replica)`` → ``(batch, sampler)`` when ``p_box`` is given (the SUM step:
    an :class:`UncertaintySampler` with that box probability), else ``(batch, generator)`` (the refiner
    step); the batch holds the images' (B, C, h, w) embeddings from ``cache`` when there is one."""

    def inputs(draw: int, replica: Replica) -> tuple[MaskBatch, UncertaintySampler | torch.Generator]:
        drawn = samples(draw, replica)
        emb = None if cache is None else torch.stack([cache.get(content_key(s.image)) for s in drawn])
        batch = collate(drawn, model, emb).to(replica.device)
        generator = step_generator(seed, draw, replica.rank, replica.device)
        return batch, generator if p_box is None else UncertaintySampler(generator, p_box=p_box)

    return inputs


def shared_cache(root: str | Path, model: Backbone, records: Callable[[], Sequence[ImageRecord]],
                 replica: Replica, progress: bool) -> EmbeddingCache:
    """The cache at ``root`` of ``model``'s image embeddings of the images ``records()`` lists (called on
    rank 0 only): rank 0 builds what is missing, the other ranks wait, then every rank opens it."""
    main_first(replica, lambda: EmbeddingCache(root, model.cache_encoder()).build(records(), progress=progress))
    return EmbeddingCache(root, model.cache_encoder())
