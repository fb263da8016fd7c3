"""Health monitoring on top of the core: rules and their byte image for the
kernels, and alerts drained from the workers' alert rings.  Rows are read
and made readable by :mod:`engine.query`."""
