"""The comparative benchmark suite (issue #5): one workload, one oracle, the
designs that fail under contention and ringflow's, side by side.

``ringflow bench`` runs it; :mod:`engine.suite.base` defines what every
contender implements."""
