"""``ringflow serve`` with a fault injected into one gateway method, run as
its own process by the gateway fault tests:

    python -m tests.faulty_serve METHOD TIMES [serve arguments...]

The first TIMES calls of ``engine.net.gateway.Gateway.METHOD`` raise
``RuntimeError("injected fault N")`` instead of running; later calls run
it.  Everything else is the real ``ringflow serve``.  The fault lives here,
in the tests, so that the shipped gateway carries no fault switch."""

import sys

from engine.cli.main import main
from engine.net.gateway import Gateway


def inject(method: str, times: int) -> None:
    """Make the first ``times`` calls of ``Gateway.<method>`` raise."""
    real = getattr(Gateway, method)
    calls = [0]

    def faulty(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] <= times:
            raise RuntimeError(f"injected fault {calls[0]}")
        return real(self, *args, **kwargs)

    setattr(Gateway, method, faulty)


if __name__ == "__main__":
    inject(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(["serve", *sys.argv[3:]]))
