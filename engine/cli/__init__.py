"""The ``ringflow`` command: its parser, one module per long-running command
(serve, demo, load generation) and the renderers of what they print.  The
entry point is :func:`engine.cli.main.main`."""
