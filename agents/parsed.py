"""Snapshot records read, or made, once per worker.

The track agent and the sink read the same snapshot records: Faust hands one Kafka message to
both streams of a worker. Each parsed every record, and the JSON of the snapshots (about 30
fields each) was 6% of a draining worker's main thread, half of it the second read. The track
agent keeps what it read under the message (:meth:`ParsedRecords.keep`), and the sink takes it
(:meth:`ParsedRecords.take`) instead of reading the record again; neither changes the objects.
A record the sink takes before the track agent reads it, or that only one of them reads, is
read as before: the entries live only as long as the message does (a weak-key map).

When the normalise agent runs in the same worker, the snapshot records it sends are mostly the
ones its track agent and sink read back a moment later. It keeps each record it made by its
bytes (:class:`MadeRecords`): the snapshots as objects and as JSON. A record read back with the
very same bytes is taken from there, not parsed: the track agent folds the snapshots as they
were made (reading the JSON gives equal ones: ``tests/unit/test_made_records.py``), and the
sink writes each snapshot's own JSON without serialising it again. Anything else (a record made
by another worker, one evicted, one a tool wrote) is read as before.
"""

from __future__ import annotations

import weakref

from faust.types import Message

from agents.counters import Counters
from pipeline.core.records import Counted, Made

MADE_BYTES = 16 * 1024 * 1024  # the snapshot records kept, in bytes (a worker reads them back within ~0.5 s)


class ParsedRecords:
    """Records read by one stage of the worker, by their message, for the next to take."""

    def __init__(self) -> None:
        self._by_message: weakref.WeakKeyDictionary[Message, Counted] = weakref.WeakKeyDictionary()

    def keep(self, message: Message, parsed: Counted) -> None:
        self._by_message[message] = parsed

    def take(self, message: Message) -> Counted | None:
        return self._by_message.pop(message, None)

    def __len__(self) -> int:
        return len(self._by_message)


class MadeRecords:
    """The snapshot records this worker's normalise agent sent, by their value (the bytes
    themselves: only an identical record is found), oldest dropped first past ``most`` bytes.
    Looking up a record costs hashing and comparing its bytes (about 60 µs for 200 KB), where
    reading it cost about 0.9 ms of parsing and building its snapshots (200 of them)."""

    def __init__(self, counters: Counters, most: int = MADE_BYTES) -> None:
        self._counters, self._most = counters, most
        self._by_value: dict[bytes, Made] = {}
        self._bytes = 0

    def keep(self, value: bytes, made: Made) -> None:
        if value in self._by_value:
            return
        self._by_value[value] = made
        self._bytes += len(value)
        while self._bytes > self._most and len(self._by_value) > 1:
            oldest = next(iter(self._by_value))
            self._bytes -= len(oldest)
            del self._by_value[oldest]

    def get(self, value: bytes) -> Made | None:
        made = self._by_value.get(value)
        if made is None:
            self._counters.made_misses += 1
        else:
            self._counters.made_hits += 1
        return made

    def __len__(self) -> int:
        return len(self._by_value)
