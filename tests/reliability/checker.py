"""Compares what ClickHouse and the topics hold with the simulator's ground truth.

Pure functions over plain rows, so the checker itself is unit-tested with planted faults
(``test_checker.py``). A :class:`Report` sorts every finding into one of four lists:

- ``lost``: a status the simulator served that no stored observation has, a served transition
  with no ``status_changed`` event, a batch whose latest state (``FINAL``) is not its true final
  status, or a Kafka offset of a partition that ClickHouse does not hold (a gap).
- ``duplicated``: an item stored twice where the design promises once: the same Kafka position
  stored twice, a key twice after ``FINAL``, or one ``event_id`` with two different contents.
  A snapshot's Kafka position is (partition, offset, index): a snapshot record may carry many
  snapshots (``docs/records.md``), ``index`` is the place of one in its record (0 for a record of
  one); a change event's is (partition, offset).
- ``raw_duplicates``: the same observation (or the same change event, byte for byte) at two
  Kafka offsets. At-least-once delivery allows these; scenarios bound their number.
- ``out_of_order``: a batch's observations moving backwards along the lifecycle or in
  observation time in offset order (duplicates set aside), or its status changes doing so.

Only the truth fields that every simulator has are read: ``source``, ``batch_id``,
``final_status``, ``status`` and ``served`` (the distinct consecutive statuses served).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import orjson

from pipeline.core.models import TERMINAL
from pipeline.core.transitions import RANK

Key = tuple[str, str]  # (source, batch_id)
Position = tuple[int, int, int]  # (partition, offset, index in the record)


@dataclass(frozen=True, slots=True)
class Observation:
    """One stored snapshot (a ``batch_snapshots`` row or a ``<prefix>.snapshots`` record)."""

    source: str
    batch_id: str
    status: str
    observed_at: str
    partition: int
    offset: int
    index: int = 0  # its place in a snapshot record of many

    @property
    def key(self) -> Key:
        return (self.source, self.batch_id)

    @property
    def position(self) -> Position:
        return (self.partition, self.offset, self.index)


@dataclass(frozen=True, slots=True)
class Change:
    """One stored change event; ``content`` is whatever identifies its body (bytes or a hash)."""

    event_id: str
    kind: str
    source: str
    batch_id: str
    from_status: str | None
    to_status: str | None
    partition: int
    offset: int
    content: Any = None
    index: int = 0  # its place in a change-set record

    @property
    def key(self) -> Key:
        return (self.source, self.batch_id)

    @property
    def position(self) -> Position:
        return (self.partition, self.offset, self.index)


@dataclass(slots=True)
class Report:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    raw_duplicates: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing doubled after FINAL, nothing out of order (raw duplicates allowed)."""
        return not (self.lost or self.duplicated or self.out_of_order)

    def merge(self, other: Report) -> Report:
        return Report(self.lost + other.lost, self.duplicated + other.duplicated,
                      self.raw_duplicates + other.raw_duplicates, self.out_of_order + other.out_of_order)

    def summary(self, examples: int = 5) -> str:
        parts = []
        for name in ("lost", "duplicated", "raw_duplicates", "out_of_order"):
            items: list[str] = getattr(self, name)
            parts.append(f"{name}: {len(items)}" + (f" (e.g. {items[:examples]})" if items else ""))
        return "; ".join(parts)


def served(truth: Mapping[str, Any]) -> dict[Key, list[str]]:
    return {(b["source"], b["batch_id"]): list(b["served"]) for b in truth["batches"]}


def expected_transitions(truth: Mapping[str, Any]) -> dict[Key, list[tuple[str, str]]]:
    """Per batch: the transitions the poller could have seen (consecutive served statuses)."""
    return {k: list(pairwise(s)) for k, s in served(truth).items()}


def check_observations(truth: Mapping[str, Any], rows: Sequence[Observation],
                       latest: Mapping[Key, str]) -> Report:
    """Snapshots against the truth: lost statuses, wrong final states, duplicates, reordering.

    ``latest`` is ``batch_latest FINAL`` as {key: status}; a batch the simulator has not yet
    served is not expected anywhere.
    """
    report = Report()
    seen: dict[Key, set[str]] = defaultdict(set)
    for row in rows:
        seen[row.key].add(row.status)
    for key, statuses in served(truth).items():
        for status in statuses:
            if status not in seen.get(key, set()):
                report.lost.append(f"observation {key[0]}/{key[1]} {status}")
    for b in truth["batches"]:
        key = (b["source"], b["batch_id"])
        final = b["status"] if b["served"] else None
        if final in TERMINAL and b["served"][-1] == final and latest.get(key) != final:
            report.lost.append(f"final status {key[0]}/{key[1]}: {latest.get(key)} instead of {final}")
    report.duplicated += [f"row stored twice at {where(p)}" for p in twice(rows)]
    raw, ordered = split_duplicates(rows)
    report.raw_duplicates += raw
    report.out_of_order += backwards(ordered)
    return report


def twice(items: Iterable[Observation | Change]) -> list[Position]:
    count: dict[Position, int] = defaultdict(int)
    for item in items:
        count[item.position] += 1
    return sorted(pos for pos, n in count.items() if n > 1)


def where(position: Position) -> str:
    partition, offset, index = position
    return f"partition {partition} offset {offset}" + (f" index {index}" if index else "")


def split_duplicates(rows: Sequence[Observation]) -> tuple[list[str], list[Observation]]:
    """(raw duplicate findings, the rows in offset order with later copies of an observation removed)."""
    first: dict[tuple[str, str, str, str], Observation] = {}
    raw: list[str] = []
    kept: list[Observation] = []
    for row in sorted(set(rows), key=lambda r: r.position):
        ident = (row.source, row.batch_id, row.status, row.observed_at)
        if ident in first:
            raw.append(f"observation {row.source}/{row.batch_id} {row.status}@{row.observed_at} at "
                       f"offsets {first[ident].offset} and {row.offset}")
            continue
        first[ident] = row
        kept.append(row)
    return raw, kept


def backwards(ordered: Sequence[Observation]) -> list[str]:
    """Rows (in offset order per partition) whose status rank or observation time goes backwards."""
    found: list[str] = []
    last: dict[Key, Observation] = {}
    for row in ordered:
        prev = last.get(row.key)
        if prev is not None and (RANK.get(row.status, 0) < RANK.get(prev.status, 0)
                                 or row.observed_at < prev.observed_at):
            found.append(f"observation {row.source}/{row.batch_id}: {prev.status}@{prev.observed_at} "
                         f"(offset {prev.offset}) then {row.status}@{row.observed_at} (offset {row.offset})")
        if prev is None or (RANK.get(row.status, 0), row.observed_at) >= (RANK.get(prev.status, 0),
                                                                          prev.observed_at):
            last[row.key] = row
    return found


def check_changes(truth: Mapping[str, Any], changes: Sequence[Change],
                  final_ids: Sequence[str] | None = None) -> Report:
    """Change events against the truth: every served transition once, one content per event_id.

    ``changes`` are raw (a table without FINAL, or the topic); ``final_ids`` the ``event_id``
    column of ``batch_changes FINAL``, when that table is checked too.
    """
    report = Report()
    contents: dict[str, Change] = {}
    report.duplicated += [f"change stored twice at {where(p)}" for p in twice(changes)]
    unique: list[Change] = []
    for change in sorted(set(changes), key=lambda c: (c.partition, c.offset, c.index)):
        prior = contents.get(change.event_id)
        if prior is None:
            contents[change.event_id] = change
            unique.append(change)
        elif prior.content != change.content:
            report.duplicated.append(f"event {change.event_id} with two contents "
                                     f"(offsets {prior.offset} and {change.offset})")
        else:
            report.raw_duplicates.append(
                f"event {change.event_id} at offsets {prior.offset} and {change.offset}")
    got: dict[Key, list[tuple[str, str]]] = defaultdict(list)
    for c in unique:
        if c.kind == "status_changed" and c.from_status and c.to_status:
            got[c.key].append((c.from_status, c.to_status))
    for key, pairs in expected_transitions(truth).items():
        for pair in pairs:
            if pair not in got.get(key, []):
                report.lost.append(f"transition {key[0]}/{key[1]} {pair[0]}->{pair[1]}")
    for key, pairs in got.items():
        extra = [p for p in set(pairs) if pairs.count(p) > 1]
        report.duplicated += [f"transition {key[0]}/{key[1]} {a}->{b} emitted twice" for a, b in extra]
    report.out_of_order += changes_backwards(unique)
    if final_ids is not None:
        counts: dict[str, int] = defaultdict(int)
        for event_id in final_ids:
            counts[event_id] += 1
        report.duplicated += [f"event {i} {n} times after FINAL" for i, n in counts.items() if n > 1]
    return report


def changes_backwards(unique: Sequence[Change]) -> list[str]:
    found: list[str] = []
    last: dict[Key, Change] = {}
    for c in unique:
        if c.kind != "status_changed" or c.to_status is None:
            continue
        prev = last.get(c.key)
        if prev is not None and prev.to_status is not None \
                and RANK.get(c.to_status, 0) <= RANK.get(prev.to_status, 0):
            found.append(f"change {c.source}/{c.batch_id}: ->{prev.to_status} (offset {prev.offset}) "
                         f"then ->{c.to_status} (offset {c.offset})")
        last[c.key] = c
    return found


def same_events(changes: Sequence[Change], change_sets: Sequence[Change]) -> Report:
    """The sink's feed carries exactly the events of ``<prefix>.changes``, with the same bodies
    (each once or more: a replay sends both again)."""
    report = Report()
    on_topic = {c.event_id: orjson.loads(c.content) for c in changes}
    in_sets = {c.event_id: orjson.loads(c.content) for c in change_sets}
    report.lost += [f"event {i} on the changes topic, in no change set"
                    for i in sorted(on_topic.keys() - in_sets)]
    report.duplicated += [f"event {i} in a change set, not on the changes topic"
                          for i in sorted(in_sets.keys() - on_topic)]
    report.duplicated += [f"event {i}: another body in its change set"
                          for i in sorted(on_topic.keys() & in_sets) if on_topic[i] != in_sets[i]]
    return report


def check_offsets(stored: Mapping[int, Sequence[int]], ends: Mapping[int, int], what: str) -> Report:
    """Every offset ``0 .. end-1`` of each partition stored once and in order (records of one).

    ``stored`` lists the offsets ClickHouse (or a consumer) holds per partition, in the order it
    stored or received them; ``ends`` the topic's end offsets.
    """
    expected = {p: [(o, 0) for o in range(end)] for p, end in ends.items()}
    return check_positions({p: [(o, 0) for o in offsets] for p, offsets in stored.items()}, expected, what)


def check_positions(stored: Mapping[int, Sequence[tuple[int, int]]],
                    expected: Mapping[int, Collection[tuple[int, int]]], what: str,
                    replaced: Mapping[int, Collection[tuple[int, int]]] | None = None) -> Report:
    """Every expected ``(offset, index)`` of each partition stored once and in order, nothing else.

    ``expected``: the positions the topic holds (a snapshot record of many has one per snapshot);
    ``replaced``: positions stored elsewhere by design (they may be absent, never extra).
    """
    report = Report()
    for partition, want in sorted(expected.items()):
        positions = list(stored.get(partition, []))
        elsewhere = set((replaced or {}).get(partition, ()))
        allowed = set(want) | elsewhere
        missing = sorted(set(want) - set(positions) - elsewhere)
        if missing:
            report.lost.append(f"{what} partition {partition}: {len(missing)} offsets missing "
                               f"(first {_show(missing[:5])})")
        beyond = sorted(p for p in set(positions) if p not in allowed)
        if beyond:
            report.duplicated.append(f"{what} partition {partition}: offsets past the end "
                                     f"{_show(beyond[:5])}")
        doubled = sorted(p for p, n in Counter(positions).items() if n > 1)
        if doubled:
            report.duplicated.append(f"{what} partition {partition}: offsets stored twice "
                                     f"{_show(doubled[:5])}")
        turns = [(a, b) for a, b in pairwise(positions) if b < a]
        if turns:
            report.out_of_order.append(f"{what} partition {partition}: offset {_show([turns[0][1]])[1:-1]} "
                                       f"after {_show([turns[0][0]])[1:-1]} ({len(turns)} times)")
    return report


def _show(positions: Sequence[tuple[int, int]]) -> str:
    """``[3, 4.2]``: an offset, with ``.index`` past a record's first snapshot."""
    return "[" + ", ".join(f"{o}.{i}" if i else str(o) for o, i in positions) + "]"


def replaced_changes(topic: Sequence[Change], table: Sequence[Change]) -> dict[int, set[tuple[int, int]]]:
    """Change-set positions ``(offset, index)`` whose event the table holds at a later position of
    the same partition.

    The track agent emits an event twice when it replays a snapshot after a crash (same id, same
    content, in a later change-set record), and ``batch_changes`` (ReplacingMergeTree on
    ``event_id``, version ``kafka_offset``) keeps the later copy: the earlier position is then
    absent by design, not lost. A different content under the same id is reported by
    :func:`check_changes` on the topics.
    """
    stored_at: dict[tuple[int, str], tuple[int, int]] = {}
    for row in table:
        key = (row.partition, str(row.event_id))
        stored_at[key] = max(stored_at.get(key, (-1, -1)), (row.offset, row.index))
    replaced: dict[int, set[tuple[int, int]]] = {}
    for rec in topic:
        if stored_at.get((rec.partition, str(rec.event_id)), (-1, -1)) > (rec.offset, rec.index):
            replaced.setdefault(rec.partition, set()).add((rec.offset, rec.index))
    return replaced
