"""Manifests, splits, and (later) datasets and datamodules."""
