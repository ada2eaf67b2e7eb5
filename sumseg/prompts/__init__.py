"""Prompts: the training-time sampler (uncertainty-weighted, torch) and the evaluation clicker (numpy)."""

from sumseg.prompts.clicker import Click, Clicker, next_click
from sumseg.prompts.sampler import RoundPrompts, UncertaintySampler

__all__ = ["Click", "Clicker", "RoundPrompts", "UncertaintySampler", "next_click"]
