"""Durability (issue 15, docs/journal.md): the journal's on-disk format,
its check, repair and pruning (``wal``), snapshots (``snapshot``), and the
data dir and recovery at a start (``recovery``)."""
