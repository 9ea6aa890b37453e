"""MLflow tracking: run provenance, logged models, and the registry gate."""
