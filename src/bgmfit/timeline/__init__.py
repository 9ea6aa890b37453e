"""Whole episodes: a BGM timeline (scenes, one track or none each, from where, how loud) and a preview mix."""

from bgmfit.timeline.episode import plan_episode
from bgmfit.timeline.job import score_file

__all__ = ["plan_episode", "score_file"]
