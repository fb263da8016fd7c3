"""Durability (issue 15, docs/journal.md): the journal's on-disk format,
its check and its repair; snapshots and recovery come next."""
