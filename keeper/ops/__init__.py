"""Observing the keeper: logging (and, later, metrics and health endpoints)."""
