"""asyncio contenders of the suite: everything in the current process, on a
fresh event loop, one thread.

* ``asyncio``: producer coroutines fold their events straight into one dict
  (no lock: one thread), yielding to each other every chunk.
* ``actor_per_event``: a task per event (``asyncio.create_task``), each
  applying its one update; at most ``batch`` tasks in flight per producer.
* ``actor_per_key``: an actor (task + ``asyncio.Queue``) per series; the
  producers route each event to its series' queue, the actor applies them
  in order.

Latency: creation is the producer's ``time.time_ns()`` when it takes the
event -- in a paced run (``workload.created_ns`` non-zero) the event's due
time, the producers waiting for it -- and applied is ``time.time_ns()``
right after the update, for every ``SAMPLE``-th event of each producer
(``asyncio``: the first event of every chunk; its chunk is taken once the
chunk's last event is due).

Same work as every Python contender: per series, the row of
:data:`engine.suite.threads.ROW_FIELDS` (count, sum, min, max, Welford
mean/m2, event-time EWMA, last, last_ts, first_ts, stale), folded by
:func:`engine.suite.procs.fold_rows` (``asyncio``) or per event by
:func:`engine.suite.threads.update_row` (the actors); the numpy records are
converted to Python tuples on the clock, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import abstractmethod

import numpy as np

from .base import Contender, RunResult, Workload
from .procs import Meter, as_state, chunks, created_at, fold_rows, partition
from .threads import new_row, update_row

__all__ = ["CONTENDERS", "AsyncioDict", "ActorPerEvent", "ActorPerKey"]

#: Every SAMPLE-th event of a producer carries a latency sample.
SAMPLE = 64


async def _pace(start_ns: int, created_ns: int) -> None:
    if created_ns:
        due = start_ns + int(created_ns)
        while (left := due - time.time_ns()) > 0:
            await asyncio.sleep(left / 1e9)


class _AsyncContender(Contender):
    """Runs ``self._main(parts, start_ns, lat)`` on a fresh event loop and
    measures it."""

    def run(self, workload: Workload, producers: int = 1) -> RunResult:
        parts = partition(workload, producers)
        lat: list[int] = []
        loop = asyncio.new_event_loop()
        me = os.getpid()
        meter = Meter(lambda: [me]).start()
        try:
            start = time.time_ns()
            state = loop.run_until_complete(self._main(parts, start, lat))
            seconds = (time.time_ns() - start) / 1e9
        finally:
            peak, cpu = meter.stop()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        return RunResult(name=self.name, seconds=seconds, state=as_state(state),
                         latencies_ns=np.asarray(lat, np.int64), stale_overwrites=0,
                         peak_rss_bytes=int(peak), cpu_seconds=cpu, producers=producers,
                         notes=self.tuning)

    @abstractmethod
    async def _main(self, parts, start_ns: int, lat: list) -> dict:
        """Fold every part (one per producer) and return the rows by series."""


class AsyncioDict(_AsyncContender):
    name = "asyncio"
    description = "asyncio, one process: producer coroutines fold into one dict, no lock"
    tuning = ("chunks of 256 events: rows converted with ndarray.tolist() per chunk on the "
              "clock, folded inline by the shared fold (the kernel's per-event work: Welford "
              "mean/m2, event-time EWMA, first_ts, stale besides the six checked fields), "
              "then await asyncio.sleep(0) so the producers interleave")

    chunk = 256

    async def _main(self, parts, start_ns: int, lat: list) -> dict:
        state: dict = {}
        chunk = self.chunk

        async def producer(events: np.ndarray, created: np.ndarray) -> None:
            for i, j in chunks(created, chunk):
                await _pace(start_ns, created[j - 1])
                t0 = created_at(start_ns, created[i])
                fold_rows(state, events[i:j].tolist())
                lat.append(time.time_ns() - t0)
                await asyncio.sleep(0)

        await asyncio.gather(*(producer(ev, cr) for ev, cr in parts))
        return state


class ActorPerEvent(_AsyncContender):
    name = "actor_per_event"
    description = "asyncio, a task per event (create_task), each applying one update"
    tuning = ("at most 1000 tasks in flight per producer (create a batch, gather it); "
              "last-writer rule by (ts, stream index); rows converted per batch with tolist() "
              "on the clock; each task does the kernel's per-event work (shared row update: "
              "Welford mean/m2, event-time EWMA, first_ts, stale)")

    batch = 1000

    async def _main(self, parts, start_ns: int, lat: list) -> dict:
        state: dict = {}
        get = state.get

        async def apply(i, key, ts, metric, v, created) -> None:
            sk = (key, metric)
            st = get(sk)
            if st is None:
                state[sk] = new_row(ts, v, i)
            else:
                update_row(st, i, ts, v)
            if created:
                lat.append(time.time_ns() - created)

        async def producer(events: np.ndarray, created: np.ndarray) -> None:
            create = asyncio.create_task
            paced = bool(created.any())
            for i in range(0, len(events), self.batch):
                j = min(i + self.batch, len(events))
                rows = events[i:j].tolist()
                tasks = []
                for k, (key, ts, metric, _f, v) in enumerate(rows):
                    if paced:
                        await _pace(start_ns, created[i + k])
                    stamp = 0
                    if (i + k) % SAMPLE == 0:
                        stamp = created_at(start_ns, created[i + k])
                    tasks.append(create(apply(i + k, key, ts, metric, v, stamp)))
                await asyncio.gather(*tasks)

        await asyncio.gather(*(producer(ev, cr) for ev, cr in parts))
        return state


class ActorPerKey(_AsyncContender):
    name = "actor_per_key"
    description = "asyncio, an actor (task + asyncio.Queue) per series; producers route to it"
    tuning = ("unbounded queues with put_nowait (no await per event), the actor drains its "
              "queue with get_nowait after each await; producers yield every 256 events and "
              "convert each chunk with tolist() on the clock; the actor does the kernel's "
              "per-event work (shared row update: Welford mean/m2, event-time EWMA, "
              "first_ts, stale)")

    chunk = 256

    async def _main(self, parts, start_ns: int, lat: list) -> dict:
        state: dict = {}
        queues: dict = {}
        actors: list = []

        async def actor(sk, q: asyncio.Queue) -> None:
            st = None
            get, get_nowait, empty = q.get, q.get_nowait, q.empty
            while True:
                item = await get()
                while True:
                    if item is None:
                        state[sk] = st
                        return
                    i, ts, v, created = item
                    if st is None:
                        st = new_row(ts, v, i)
                    else:
                        update_row(st, i, ts, v)
                    if created:
                        lat.append(time.time_ns() - created)
                    if empty():
                        break
                    item = get_nowait()

        async def producer(events: np.ndarray, created: np.ndarray) -> None:
            paced = bool(created.any())
            for i in range(0, len(events), self.chunk):
                j = min(i + self.chunk, len(events))
                for k, (key, ts, metric, _f, v) in enumerate(events[i:j].tolist()):
                    sk = (key, metric)
                    q = queues.get(sk)
                    if q is None:
                        q = queues[sk] = asyncio.Queue()
                        actors.append(asyncio.create_task(actor(sk, q)))
                    if paced:
                        await _pace(start_ns, created[i + k])
                    stamp = 0
                    if (i + k) % SAMPLE == 0:
                        stamp = created_at(start_ns, created[i + k])
                    q.put_nowait((i + k, ts, v, stamp))
                await asyncio.sleep(0)

        try:
            await asyncio.gather(*(producer(ev, cr) for ev, cr in parts))
            for q in queues.values():
                q.put_nowait(None)
            await asyncio.gather(*actors)
        finally:
            for a in actors:
                a.cancel()
        return state


CONTENDERS = {c.name: c() for c in (AsyncioDict, ActorPerEvent, ActorPerKey)}
