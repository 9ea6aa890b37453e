"""Thin pipeline stages: load params, call library code, write outs and metrics.

Each module has the name of its DVC stage, its ``params.yaml`` section and its
CLI sub-command.
"""
