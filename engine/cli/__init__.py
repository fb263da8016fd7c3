"""The ``ringflow`` command: its parser, one module per long-running command
(serve, demo, load generation) and the renderers of what they print.  The
entry point is :func:`engine.cli.main.main`."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``ringflow`` command (:func:`engine.cli.main.main`).

    Kept here, imported only when called, so that a ``ringflow`` script
    installed before the command moved into ``engine.cli.main`` still runs.
    """
    from .main import main as run

    return run(argv)
