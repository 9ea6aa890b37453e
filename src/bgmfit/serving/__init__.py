"""Answering requests: the recommender shared by the CLI and the BentoML service."""
