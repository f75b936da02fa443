"""pipeline.polling.sigv4 against AWS's published Signature Version 4 example values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.secret import Secret
from pipeline.polling import sigv4

# The credentials and instant of AWS's SigV4 test suite (and of its signing-key example).
EXAMPLE = Secret("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
SCOPE = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"


def test_signing_key_matches_the_documented_derivation() -> None:
    key = sigv4.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


@pytest.mark.parametrize(("url", "signature"), [
    ("https://example.amazonaws.com/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("https://example.amazonaws.com/?Param2=value2&Param1=value1",  # get-vanilla-query-order-key-case
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
])
def test_test_suite_vectors(url: str, signature: str) -> None:
    headers = sigv4.sign(sigv4.credentials(EXAMPLE), "GET", url, region="us-east-1", service="service",
                         now=WHEN)
    assert headers == {"x-amz-date": "20150830T123600Z", "Authorization":
                       f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host;x-amz-date, "
                       f"Signature={signature}"}


def test_session_token_is_signed_and_sent() -> None:
    creds = sigv4.credentials(Secret("AKID:secret:token-xyz"))
    headers = sigv4.sign(creds, "GET", "https://bedrock.eu-west-1.amazonaws.com/model-invocation-jobs",
                         region="eu-west-1", now=WHEN)
    assert headers["x-amz-security-token"] == "token-xyz"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["Authorization"]


def test_verify_accepts_its_own_signature_and_refuses_a_changed_request() -> None:
    creds = sigv4.credentials(EXAMPLE)
    url = "http://127.0.0.1:8080/sim-1/model-invocation-job/arn%3Aaws%3Abedrock%3Ax%2Fy?maxResults=5"
    headers = {"Host": "127.0.0.1:8080", **sigv4.sign(creds, "GET", url, region="us-east-1", now=WHEN)}
    assert sigv4.verify(creds, "GET", url, headers)
    assert not sigv4.verify(creds, "GET", url.replace("maxResults=5", "maxResults=6"), headers)
    assert not sigv4.verify(sigv4.credentials(Secret("AKIDEXAMPLE:other")), "GET", url, headers)
    assert not sigv4.verify(creds, "GET", url, {"Host": "127.0.0.1:8080"})


@pytest.mark.parametrize("value", ["no-colon-here", ":secret", "AKID:"])
def test_bad_credentials_are_one_line_without_the_value(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        sigv4.credentials(Secret(value), "sources[0].api_key_env")
    assert str(info.value).startswith("sources[0].api_key_env: AWS credentials must be")
    assert value not in str(info.value)


def test_region_from_the_base_url() -> None:
    assert sigv4.region_of("https://bedrock.eu-central-1.amazonaws.com") == "eu-central-1"
    assert sigv4.region_of("http://127.0.0.1:8787/sim-4") == "us-east-1"
