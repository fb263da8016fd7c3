"""The engine's core: records, the control segment's layout, shared-memory
segments, the embedded :class:`~engine.core.engine.Engine` and the worker
process's entry point.  A worker imports nothing outside this package and
the compiled modules ``engine._*``."""
