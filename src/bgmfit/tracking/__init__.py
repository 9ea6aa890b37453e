"""MLflow tracking helpers (and, later, the registry gate)."""
