"""ringflow over ZeroMQ: the wire protocol, the gateway that serves it, and
the clients (blocking and asyncio) that speak it."""
