"""Standard Webhooks verification (pipeline.core.webhooks) against the scheme's own test vectors,
and a property: any change to the body, the id or the timestamp is refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import webhooks as wh
from pipeline.core.secret import Secret

# The vectors of the Standard Webhooks reference libraries (libraries/python/tests/test_webhooks.py
# in github.com/standard-webhooks/standard-webhooks).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
KEY = wh.decode_secret(SECRET)
ROTATED = "whsec_" + base64.b64encode(b"the-new-secret-after-rotation").decode()


def headers(signature: str = EXPECTED, msg_id: str = MSG_ID, ts: int = TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def refused(keys: tuple[bytes, ...], hdrs: dict[str, str], body: bytes, now: float = TIMESTAMP) -> str:
    with pytest.raises(wh.Refused) as caught:
        wh.verify(keys, hdrs, body, now)
    return caught.value.reason


def test_the_reference_signature() -> None:
    assert wh.sign(KEY, MSG_ID, TIMESTAMP, PAYLOAD)["webhook-signature"] == EXPECTED
    assert wh.decode_secret(SECRET.removeprefix("whsec_")) == KEY  # with and without the prefix


def test_a_valid_request_is_accepted() -> None:
    signed = wh.verify((KEY,), headers(), PAYLOAD, TIMESTAMP)
    assert signed.msg_id == MSG_ID


def test_several_signatures_one_valid() -> None:
    listed = " ".join([OTHER, "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", EXPECTED, OTHER])
    assert wh.verify((KEY,), headers(listed), PAYLOAD, TIMESTAMP).msg_id == MSG_ID


def test_only_v1_signatures_count() -> None:
    assert refused((KEY,), headers("v2," + EXPECTED[3:]), PAYLOAD) == wh.BAD_SIGNATURE


def test_rotation_two_secrets_at_once() -> None:
    keys = wh.secret_keys(Secret(f"{ROTATED} {SECRET}"))
    assert wh.verify(keys, headers(), PAYLOAD, TIMESTAMP)  # signed with the old one
    new = wh.sign(keys[0], MSG_ID, TIMESTAMP, PAYLOAD)
    assert wh.verify(keys, new, PAYLOAD, TIMESTAMP)  # and with the new one
    assert refused((keys[0],), headers(), PAYLOAD) == wh.BAD_SIGNATURE  # the old one retired


def test_tampered_body_and_wrong_signature() -> None:
    assert refused((KEY,), headers(), b'{"test": 2432232315}') == wh.BAD_SIGNATURE
    wrong = headers("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=")
    assert refused((KEY,), wrong, PAYLOAD) == wh.BAD_SIGNATURE


def test_timestamps_outside_the_tolerance() -> None:
    assert refused((KEY,), headers(), PAYLOAD, now=TIMESTAMP + 301) == wh.STALE
    assert refused((KEY,), headers(), PAYLOAD, now=TIMESTAMP - 301) == wh.STALE  # from the future
    assert wh.verify((KEY,), headers(), PAYLOAD, TIMESTAMP + 300)
    assert refused((KEY,), headers(ts=0) | {"webhook-timestamp": "hello"}, PAYLOAD) == wh.BAD_TIMESTAMP


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header(missing: str) -> None:
    hdrs = headers()
    del hdrs[missing]
    assert refused((KEY,), hdrs, PAYLOAD) == wh.MISSING_HEADERS


def test_a_bad_secret_is_not_repeated() -> None:
    with pytest.raises(ValueError, match="not shown") as caught:
        wh.decode_secret("whsec_not base64 !!")
    assert "not base64 !!" not in str(caught.value)


@given(body=st.binary(max_size=200), msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                                     min_size=1, max_size=40),
       ts=st.integers(TIMESTAMP - 300, TIMESTAMP + 300), data=st.data())
def test_any_change_is_refused(body: bytes, msg_id: str, ts: int, data: st.DataObject) -> None:
    signed = wh.sign(KEY, msg_id, ts, body)
    assert wh.verify((KEY,), signed, body, TIMESTAMP)
    other_body = data.draw(st.binary(max_size=200).filter(lambda b: b != body))
    other_id = data.draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                                 max_size=40).filter(lambda i: i != msg_id))
    other_ts = data.draw(st.integers(TIMESTAMP - 300, TIMESTAMP + 300).filter(lambda t: t != ts))
    assert refused((KEY,), signed, other_body) == wh.BAD_SIGNATURE
    assert refused((KEY,), signed | {"webhook-id": other_id}, body) == wh.BAD_SIGNATURE
    assert refused((KEY,), signed | {"webhook-timestamp": str(other_ts)}, body) == wh.BAD_SIGNATURE


def test_read_event_openai_and_gemini() -> None:
    body = b'{"id":"evt_1","object":"event","created_at":1719168000,"type":"batch.completed",' \
           b'"data":{"id":"batch_abc"}}'
    event = wh.read_event(body, "openai")
    assert event == wh.Event("evt_1", "batch.completed", "batch_abc", 1719168000)
    gemini = b'{"id":"evt_2","object":"event","type":"batch.succeeded","data":{"id":"xyz123"}}'
    assert wh.read_event(gemini, "gemini") == wh.Event("evt_2", "batch.succeeded", "batches/xyz123", None)
    named = b'{"type":"batch.failed","data":{"id":"batches/xyz"}}'
    assert wh.read_event(named, "gemini") is not None
    assert wh.read_event(named, "gemini").batch_id == "batches/xyz"  # type: ignore[union-attr]
    assert wh.read_event(b'{"type":"response.completed","data":{"id":"r"}}', "openai") is None


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", wh.NOT_JSON), (b"[1]", wh.NOT_AN_EVENT), (b'{"type":"batch.completed"}', wh.NOT_AN_EVENT),
    (b'{"type":"batch.completed","data":{"id":7}}', wh.NOT_AN_EVENT),
])
def test_read_event_refuses(body: bytes, reason: str) -> None:
    with pytest.raises(wh.Refused) as caught:
        wh.read_event(body, "openai")
    assert caught.value.reason == reason


def test_hint_round_trip() -> None:
    hint = wh.Hint("sim-1", "openai", "batch_abc", "batch.completed", "msg_1", 1.5)
    assert wh.Hint.from_json(hint.to_json()) == hint
    assert hint.key == "sim-1/batch_abc"
    with pytest.raises(ValueError, match="lacks"):
        wh.Hint.from_json(b'{"source":"x"}')
