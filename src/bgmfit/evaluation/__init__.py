"""Held-out evaluation of both networks and their baselines: metrics and plots."""
