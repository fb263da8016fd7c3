"""Supervision of an engine's workers: replacement of dead and hung
workers on their shard, crash-loop back-off and the degraded state
(docs/faults.md)."""
