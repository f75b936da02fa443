"""Snapshot records read once per worker.

The track agent and the sink read the same snapshot records: Faust hands one Kafka message to
both streams of a worker. Each parsed every record, and the JSON of the snapshots (about 30
fields each) was 6% of a draining worker's main thread, half of it the second read. The track
agent keeps what it read under the message (:meth:`ParsedRecords.keep`), and the sink takes it
(:meth:`ParsedRecords.take`) instead of reading the record again; neither changes the objects.
A record the sink takes before the track agent reads it, or that only one of them reads, is
read as before: the entries live only as long as the message does (a weak-key map).
"""

from __future__ import annotations

import weakref

from faust.types import Message

from pipeline.core.records import Counted


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
