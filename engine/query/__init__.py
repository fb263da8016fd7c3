"""The read model: one way to read series state, for every reader.

:mod:`~engine.query.reader` reads the workers' state tables without a lock
(:class:`~engine.query.reader.Reader`, which :class:`engine.Engine`'s reads
delegate to); :mod:`~engine.query.readable` turns rows into readable dicts
and decodes the quantile sketches; :mod:`~engine.query.ops` answers the
gateway's query requests from a reader.  The compiled side of the binary
lookups is :mod:`engine._wire`.
"""
