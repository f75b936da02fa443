"""The [track] settings section and the pieces of the track agent that are plain functions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import orjson
import pytest

from agents.app import store_url
from agents.worker import parse_args
from pipeline.config import Settings, TrackConfig, load_settings
from pipeline.core.codec import ORJSON, STDLIB
from pipeline.core.dlq import reason_of
from pipeline.core.errors import ConfigError, InvalidRecord
from pipeline.core.models import ChangeEvent, Envelope, Snapshot
from pipeline.core.track import track
from pipeline.core.transitions import DEFAULT_RULES, BatchState, Rules
from tests.change_schema import validate

SNAP = Snapshot(source="prod", provider="openai", batch_id="b1", status="in_progress",
                provider_status="in_progress", observed_at="2026-01-01T00:10:00.000Z",
                created_at="2026-01-01T00:00:00.000Z", in_progress_at="2026-01-01T00:01:00.000Z",
                requests_total=10, requests_completed=3, requests_failed=0)


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "batchscope.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, env or {})


def test_track_defaults_and_rules() -> None:
    config = TrackConfig()
    assert config.store == "memory"
    assert config.rules() == DEFAULT_RULES
    assert Settings().track == config


def test_track_section_and_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, "[track]\nstall_seconds = 60\nprogress_min_step = 5\nexpiry_risk = false\n",
                    {"BATCHSCOPE_TRACK_PROGRESS_MIN_INTERVAL": "2.5"})
    assert settings.track.rules() == Rules(60.0, 2.5, 5, False)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('store = "redis"', "track.store: must be one of memory, rocksdb"),
        ("stall_seconds = -1", "track.stall_seconds"),
        ("progress_min_interval = -0.5", "track.progress_min_interval"),
        ("progress_min_step = -2", "track.progress_min_step"),
        ("stall = 5", "track.stall: unknown key"),
        ('expiry_risk = "yes"', "track.expiry_risk: expected bool"),
    ],
)
def test_track_errors(tmp_path: Path, toml: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load(tmp_path, f"[track]\n{toml}\n")


def test_rocksdb_without_the_extra_is_a_clear_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # as on an install without the extra
                        lambda name, *a: None if name == "rocksdict" else found(name, *a))
    with pytest.raises(ConfigError, match=r"rocksdict package: pip install 'batchscope\[rocksdb\]'"):
        load(tmp_path, '[track]\nstore = "rocksdb"\n')


def test_store_url() -> None:
    assert store_url(Settings()) == "memory://"


# --- the track step the agent runs ----------------------------------------------------------------


def test_track_step_from_nothing_and_from_a_stored_state() -> None:
    prior, state, (event,) = track(None, SNAP.to_json(), DEFAULT_RULES)
    assert prior is None
    assert event.kind == "discovered"
    validate(event.to_json())
    stored = orjson.dumps(state.to_dict())
    later = Snapshot(**{**SNAP.to_dict(), "status": "finalizing", "finalizing_at": "2026-01-01T00:20:00.000Z",
                        "observed_at": "2026-01-01T00:21:00.000Z"})
    prior2, state2, events = track(stored, later.to_json(), DEFAULT_RULES)
    assert prior2 == state
    assert state2.status == "finalizing"
    assert events[0].kind == "status_changed"
    for e in events:
        validate(e.to_json())


@pytest.mark.parametrize("value", [b"{not json", b"[1]", b'{"source": "x"}', b'{"status": 1}'])
def test_unreadable_snapshots_raise_invalid_record(value: bytes) -> None:
    with pytest.raises(InvalidRecord):
        track(None, value, DEFAULT_RULES)


def test_an_unreadable_table_value_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord, match="track state"):
        track(b"\xff", SNAP.to_json(), DEFAULT_RULES)


def test_reason_of() -> None:
    assert reason_of(InvalidRecord("snapshot: bad")) == "snapshot: bad"
    assert reason_of(KeyError("x")) == "unexpected KeyError: 'x'"


# --- codecs -----------------------------------------------------------------------------------------


def test_the_stdlib_codec_writes_the_same_json_as_orjson() -> None:
    _, state, _ = track(None, SNAP.to_json(), DEFAULT_RULES)
    _, _, events = track(orjson.dumps(state.to_dict()), Snapshot(**{**SNAP.to_dict(), "requests_completed": 9,
                         "observed_at": "2026-01-01T01:10:00.000Z"}).to_json(), DEFAULT_RULES)
    for obj in (SNAP, *events, state.to_dict()):
        assert json.loads(STDLIB.dumps(obj)) == orjson.loads(ORJSON.dumps(obj))


def test_the_track_step_is_the_same_with_either_codec() -> None:
    by_codec = [track(None, SNAP.to_json(c.dumps), DEFAULT_RULES, c) for c in (ORJSON, STDLIB)]
    assert by_codec[0] == by_codec[1]
    envelope = Envelope("prod", "openai", SNAP.observed_at, {"id": "b1"})
    assert Envelope.from_json(envelope.to_json(STDLIB.dumps), STDLIB.loads) == envelope
    assert ChangeEvent.from_json(by_codec[1][2][0].to_json(STDLIB.dumps)) == by_codec[0][2][0]
    with pytest.raises(InvalidRecord):
        Snapshot.from_json(b"{", STDLIB.loads)


def test_state_from_the_stdlib_codec_round_trips() -> None:
    at = SNAP.observed_at
    state = BatchState("in_progress", at, (1, 2, 3), (1, 0, 3), at, at)
    assert BatchState.from_dict(STDLIB.loads(STDLIB.dumps(state.to_dict()))) == state


# --- the worker entry point ------------------------------------------------------------------------


def test_worker_arguments() -> None:
    args = parse_args(["--config", "x.toml", "--codec", "json"])
    assert (args.agents, args.codec, args.config) == ("normalise,track", "json", "x.toml")
    with pytest.raises(SystemExit):
        parse_args(["--agents", "track,poll"])
