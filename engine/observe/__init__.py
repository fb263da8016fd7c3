"""Watching ringflow itself: Prometheus metrics (:mod:`.metrics`)."""
