"""Prompts: the one prompt type (:class:`PromptBatch`, frames stated), shared geometry (coordinate
order, boxes, error regions), the training-time sampler (uncertainty-weighted, torch) and the
evaluation clicker (numpy)."""

from sumseg.prompts.batch import PromptBatch, click_prompts
from sumseg.prompts.clicker import Clicker, next_click
from sumseg.prompts.geometry import Click, click_points, error_regions, mask_box, tight_boxes
from sumseg.prompts.sampler import UncertaintySampler

__all__ = ["Click", "Clicker", "PromptBatch", "UncertaintySampler", "click_points", "click_prompts", "error_regions",
           "mask_box", "next_click", "tight_boxes"]
