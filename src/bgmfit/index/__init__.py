"""The catalogue index: embeddings of every catalogue track from the champion models, and their search."""

from bgmfit.index.catalogue import Catalogue, CosineIndex, build_catalogue

__all__ = ["Catalogue", "CosineIndex", "build_catalogue"]
