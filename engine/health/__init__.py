"""Health monitoring on top of the core: rules and their byte image for the
kernels, alerts drained from the workers' alert rings, and the readable
form of a state row."""
