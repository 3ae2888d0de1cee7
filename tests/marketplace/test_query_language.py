"""The offer query language parser (pure: no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.marketplace.query import FIELDS, MAX_TERMS, QueryError, Term, parse_query


def test_the_contract_example_parses_into_typed_terms():
    assert parse_query("gpu_vram_gb>=24 gpu_count>=2 hourly_rate<1.5 country in [US,CA]") == [
        Term("gpu_vram_gb", ">=", Decimal(24)),
        Term("gpu_count", ">=", 2),
        Term("hourly_rate", "<", Decimal("1.5")),
        Term("country", "in", ("US", "CA")),
    ]


def test_spaces_around_operators_and_case_of_names_do_not_matter():
    assert parse_query("GPU_COUNT >= 2  Country IN [us, 'ca']") == [
        Term("gpu_count", ">=", 2),
        Term("country", "in", ("US", "CA")),
    ]


def test_quoted_values_keep_spaces_and_escapes():
    assert parse_query('gpu_model="RTX \\"Ti\\" 4090"') == [Term("gpu_model", "=", 'RTX "Ti" 4090')]
    assert parse_query("gpu_model='A100 80GB'") == [Term("gpu_model", "=", "A100 80GB")]


def test_underscores_stand_for_spaces_in_gpu_model():
    assert parse_query("gpu_model=RTX_4090") == [Term("gpu_model", "=", "RTX 4090")]


def test_every_operator_is_understood():
    ops = [
        t.op
        for t in parse_query(
            "tflops=1 tflops!=1 tflops<1 tflops<=1 tflops>1 tflops>=1 tflops==1 tflops in [1,2]"
        )
    ]
    assert ops == ["=", "!=", "<", "<=", ">", ">=", "=", "in"]


def test_booleans_and_duplicates_in_lists():
    assert parse_query("verified=yes gpu_count in [1,1,2]") == [
        Term("verified", "=", True),
        Term("gpu_count", "in", (1, 2)),
    ]


def test_an_empty_query_has_no_terms():
    assert parse_query("") == []
    assert parse_query("   ") == []


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("bogus=1", "bogus=1"),
        ("gpu_count>=2 bogus<3", "bogus<3"),
        ("gpu_count~2", "gpu_count~2"),
        ("gpu_count>>2", "gpu_count>>2"),
        ("gpu_count 2", "gpu_count 2"),
        ("gpu_count>=2.5", "gpu_count>=2.5"),
        ("gpu_count>=65", "gpu_count>=65"),
        ("tflops>=-1", "tflops>=-1"),
        ("tflops>=1e3", "tflops>=1e3"),
        ("ram_gb>=١٢", "ram_gb>=١٢"),
        ("country=USA", "country=USA"),
        ("gpu_model>4090", "gpu_model>4090"),
        ("verified in [true]", "verified in [true]"),
        ("gpu_count in [1 2]", "[1"),
        ("gpu_count in [1,]", "[1,]"),
        ("gpu_count in [[1]]", "[[1]]"),
        ("]", "]"),
        ("gpu_model=''", "gpu_model=''"),
    ],
)
def test_a_bad_term_raises_a_query_error_naming_it(text, term):
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    assert caught.value.term is not None
    assert term in caught.value.term or term in caught.value.message


def test_too_many_terms_is_an_error():
    with pytest.raises(QueryError, match="at most"):
        parse_query(" ".join(["gpu_count>=1"] * (MAX_TERMS + 1)))


def test_normalized_terms_are_canonical():
    a = parse_query("gpu_vram_gb>=24.0 country in [us,CA] gpu_model=rtx_4090")
    b = parse_query("gpu_vram_gb >= 24 country IN [US, ca] gpu_model='rtx 4090'")
    assert [t.normalized() for t in a] == [t.normalized() for t in b]


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(max_size=120))
def test_random_text_parses_or_raises_only_a_query_error(text):
    try:
        terms = parse_query(text)
    except QueryError as exc:
        assert exc.message
        return
    for term in terms:
        assert term.field in FIELDS
        assert term.op in FIELDS[term.field].ops


_FIELD = st.sampled_from([*FIELDS, "nope", "IN"])
_OP = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "in", "==", "=<", "!", "<>"])
_VALUE = st.one_of(
    st.integers(-5, 100).map(str),
    st.decimals(allow_nan=True).map(str),
    st.sampled_from(
        ["US", "true", "RTX_4090", '"a b"', "[1,2]", "[US, CA]", "[", "]", "''", "[,]", "'\\'"]
    ),
)


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(st.tuples(_FIELD, _OP, _VALUE, st.sampled_from(["", " "])), max_size=6))
def test_almost_valid_queries_parse_or_raise_only_a_query_error(parts):
    text = " ".join(f"{f}{sp}{op}{sp}{v}" for f, op, v, sp in parts)
    try:
        parse_query(text)
    except QueryError as exc:
        assert exc.message
