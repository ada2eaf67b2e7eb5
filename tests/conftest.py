"""Shared fixtures: the tiny SAM configuration and a test image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sumseg import build_model
from sumseg.models.sum_sam import SumSam


def randomise_task_prompts(model: SumSam, seed: int = 1) -> SumSam:
    """Give every task prompt a non-zero value, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.task_prompts.task_embeddings.copy_(torch.randn(model.task_prompts.task_embeddings.shape, generator=g))
    return model


@pytest.fixture(scope="session")
def tiny_model() -> SumSam:
    return build_model("tiny")


@pytest.fixture
def rgb_image() -> np.ndarray:
    """(H, W, 3) uint8, not square, so resizing and padding are exercised."""
    return (np.random.default_rng(0).random((180, 240, 3)) * 255).astype(np.uint8)
