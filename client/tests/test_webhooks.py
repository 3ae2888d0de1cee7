from __future__ import annotations

import time

from dc_client import sign, verify_signature

SECRET = "whsec_test_secret"
BODY = b'{"id":"e1","type":"rental.active","data":{"id":"r1"}}'


def test_a_signature_made_with_the_secret_over_the_raw_body_is_accepted():
    header = sign(SECRET, BODY)
    assert verify_signature(SECRET, header, BODY) is True
    assert verify_signature(SECRET, header, BODY.decode()) is True


def test_the_header_is_an_hmac_sha256_of_timestamp_dot_body_as_the_contract_says():
    import hashlib
    import hmac

    t = 1_800_000_000
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    header = f"t={t},v1={expected}"
    assert verify_signature(SECRET, header, BODY, now=t + 10) is True
    assert sign(SECRET, BODY, t) == header


def test_a_wrong_secret_is_rejected():
    assert verify_signature("another_secret", sign(SECRET, BODY), BODY) is False


def test_a_changed_body_is_rejected():
    assert verify_signature(SECRET, sign(SECRET, BODY), BODY + b" ") is False


def test_a_timestamp_older_than_the_tolerance_is_rejected_even_with_a_good_mac():
    old = int(time.time()) - 301
    header = sign(SECRET, BODY, old)
    assert verify_signature(SECRET, header, BODY) is False
    assert verify_signature(SECRET, header, BODY, tolerance=600) is True


def test_a_timestamp_far_in_the_future_is_rejected():
    header = sign(SECRET, BODY, int(time.time()) + 3600)
    assert verify_signature(SECRET, header, BODY) is False


def test_malformed_or_missing_headers_are_rejected_without_raising():
    for header in (None, "", "v1=abc", "t=123", "t=abc,v1=def", "garbage"):
        assert verify_signature(SECRET, header, BODY) is False


def test_any_matching_v1_among_several_is_enough_while_a_secret_is_rotated():
    t = int(time.time())
    good = sign(SECRET, BODY, t).split("v1=")[1]
    header = f"t={t},v1={'0' * 64},v1={good}"
    assert verify_signature(SECRET, header, BODY) is True
