"""Plain ``nn.Module`` building blocks shared by both networks."""

from bgmfit.models.components.feed_forward import FeedForwardBranch, ModulationSpectrum
from bgmfit.models.components.match_head import MatchHead
from bgmfit.models.components.tower import ConvTower

__all__ = ["ConvTower", "FeedForwardBranch", "MatchHead", "ModulationSpectrum"]
