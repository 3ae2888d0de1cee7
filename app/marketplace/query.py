"""The offer query language: ``field op value`` terms separated by spaces.

    gpu_vram_gb>=24 gpu_count>=2 hourly_rate<1.5 country in [US,CA] gpu_model="RTX 4090"

Operators: ``= != < <= > >= in`` (``==`` is accepted for ``=``); ``in`` takes a list ``[a,b]``.
Values with spaces are quoted (``"..."`` or ``'...'``; ``\\`` escapes the quote). For
``gpu_model``, ``=`` means "contains, ignoring case" (as the ``gpu_model`` filter does) and an
underscore stands for a space (``gpu_model=RTX_4090``).

The parser is pure (no database): :func:`parse_query` returns typed :class:`Term` objects or raises
:class:`QueryError` naming the offending term. It never raises anything else, whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from app.validation import PLAIN_DECIMAL

MAX_QUERY_LENGTH = 1000
MAX_TERMS = 32
MAX_LIST_ITEMS = 50
MAX_TEXT_LENGTH = 100

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
OPERATORS = (*COMPARISONS, "in")
_OP_CHARS = frozenset("<>=!")
_SPECIAL = frozenset("<>=!\"'[],")
_INT = re.compile(r"[+-]?\d{1,12}", re.ASCII)
_COUNTRY = re.compile(r"[A-Za-z]{2}", re.ASCII)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class QueryError(ValueError):
    """The query is malformed; `term` is the text of the term at fault (when there is one)."""

    def __init__(self, message: str, term: str | None = None):
        super().__init__(message)
        self.message = message
        self.term = term


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: Any  # int | Decimal | str | bool, or a tuple of those for "in"

    def normalized(self) -> str:
        """A canonical text form (cache keys, cursor fingerprints)."""
        if isinstance(self.value, tuple):
            shown = "[" + ",".join(_show(v) for v in self.value) + "]"
        else:
            shown = _show(self.value)
        return f"{self.field}{self.op if self.op != 'in' else ' in '}{shown}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # "int", "decimal", "text", "country", "bool"
    low: Decimal | None = None
    high: Decimal | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        if self.kind in ("int", "decimal"):
            return OPERATORS
        if self.kind == "bool":
            return ("=", "!=")
        return ("=", "!=", "in")


def _range(kind: str, low: int | str, high: int | str) -> FieldSpec:
    return FieldSpec(kind, Decimal(low), Decimal(high))


# The searchable fields; the marketplace service maps each to its indexed column.
FIELDS: dict[str, FieldSpec] = {
    "gpu_model": FieldSpec("text"),
    "gpu_count": _range("int", 0, 64),  # free now, as gpu_free and num_gpus
    "gpu_free": _range("int", 0, 64),
    "num_gpus": _range("int", 0, 64),
    "gpu_total": _range("int", 0, 64),  # the node's GPUs, taken or not
    "price_per_gpu": _range("decimal", 0, 1_000_000_000),
    "gpu_vram_gb": _range("decimal", 0, 4096),
    "tflops": _range("decimal", 0, 1_000_000),
    "cpu_cores": _range("int", 0, 4096),
    "ram_gb": _range("decimal", 0, 65536),
    "disk_gb": _range("decimal", 0, 10_000_000),
    "hourly_rate": _range("decimal", 0, 1_000_000_000),
    "country": FieldSpec("country"),
    "verified": FieldSpec("bool"),
    "reliability": _range("decimal", 0, 1),
}


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "op", "list"
    value: Any  # str, or a tuple of (kind, str) items for "list"
    start: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _OP_CHARS:
            j = i
            while j < n and text[j] in _OP_CHARS:
                j += 1
            op = "=" if text[i:j] == "==" else text[i:j]
            if op not in COMPARISONS:
                raise QueryError(
                    f"Unknown operator '{text[i:j]}' at position {i + 1}; "
                    f"use one of {' '.join(OPERATORS)}.",
                    _around(text, i, j),
                )
            tokens.append(_Token("op", op, i, j))
            i = j
        elif ch in "\"'":
            value, j = _read_quoted(text, i)
            tokens.append(_Token("string", value, i, j))
            i = j
        elif ch == "[":
            items, j = _read_list(text, i)
            tokens.append(_Token("list", items, i, j))
            i = j
        elif ch in "],":
            raise QueryError(f"Unexpected '{ch}' at position {i + 1}.", _around(text, i, i + 1))
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            tokens.append(_Token("word", text[i:j], i, j))
            i = j
    return tokens


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    quote, i, out = text[start], start + 1, []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise QueryError(
        f"Unterminated quoted value starting at position {start + 1}.",
        _around(text, start, len(text)),
    )


def _read_list(text: str, start: int) -> tuple[tuple[tuple[str, str], ...], int]:
    items: list[tuple[str, str]] = []
    i, n = start + 1, len(text)
    expect_item = True
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "]":
            if expect_item and items:
                raise QueryError("A list ends with a comma.", _around(text, start, i + 1))
            if not items:
                raise QueryError("An empty list matches nothing.", _around(text, start, i + 1))
            return tuple(items), i + 1
        elif ch == ",":
            if expect_item:
                raise QueryError("A list has an empty item.", _around(text, start, i + 1))
            expect_item = True
            i += 1
        elif not expect_item:
            raise QueryError("List items must be separated by commas.", _around(text, start, i + 1))
        elif ch in "\"'":
            value, i = _read_quoted(text, i)
            items.append(("string", value))
            expect_item = False
        elif ch in _SPECIAL:
            raise QueryError(f"Unexpected '{ch}' in a list.", _around(text, start, i + 1))
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            items.append(("word", text[i:j]))
            i = j
            expect_item = False
        if len(items) > MAX_LIST_ITEMS:
            raise QueryError(f"A list may hold at most {MAX_LIST_ITEMS} items.", text[start:i])
    raise QueryError(
        f"Unterminated list starting at position {start + 1}; close it with ']'.", text[start:]
    )


def _around(text: str, start: int, end: int) -> str:
    """The whitespace-delimited chunk of `text` containing [start, end): the term at fault."""
    left = start
    while left > 0 and not text[left - 1].isspace():
        left -= 1
    right = end
    while right < len(text) and not text[right].isspace():
        right += 1
    return text[left:right]


def parse_query(text: str) -> list[Term]:
    """Parse `text` into terms; raise QueryError naming the bad term."""
    if not isinstance(text, str):
        raise QueryError("The query must be a string.")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"The query is longer than {MAX_QUERY_LENGTH} characters.")
    tokens = _tokenize(text)
    terms: list[Term] = []
    i = 0
    while i < len(tokens):
        first = tokens[i]
        if first.kind != "word":
            raise QueryError(
                f"Expected a field name at position {first.start + 1}.",
                _around(text, first.start, first.end),
            )
        if i + 1 >= len(tokens):
            raise QueryError(
                f"Term '{first.value}' is incomplete: expected field op value "
                "(quote values that contain spaces).",
                first.value,
            )
        op_token = tokens[i + 1]
        if op_token.kind == "op":
            op = op_token.value
        elif op_token.kind == "word" and op_token.value.lower() == "in":
            op = "in"
        else:
            raise QueryError(
                f"Term '{first.value}' has no operator: expected field op value "
                "(quote values that contain spaces).",
                text[first.start : op_token.end],
            )
        if i + 2 >= len(tokens) or tokens[i + 2].kind == "op":
            end = op_token.end if i + 2 >= len(tokens) else tokens[i + 2].end
            raise QueryError(
                f"Term '{text[first.start : end]}' has no value.", text[first.start : end]
            )
        value_token = tokens[i + 2]
        term_text = text[first.start : value_token.end]
        terms.append(_make_term(first.value, op, value_token, term_text))
        if len(terms) > MAX_TERMS:
            raise QueryError(f"A query may hold at most {MAX_TERMS} terms.")
        i += 3
    return terms


def _make_term(name: str, op: str, token: _Token, term_text: str) -> Term:
    field = name.lower()
    spec = FIELDS.get(field)
    if spec is None:
        raise QueryError(
            f"Unknown field '{name}' in '{term_text}'; known fields: {', '.join(FIELDS)}.",
            term_text,
        )
    if op not in spec.ops:
        raise QueryError(
            f"Operator '{op}' does not apply to {field} in '{term_text}'; "
            f"use one of {' '.join(spec.ops)}.",
            term_text,
        )
    if op == "in":
        if token.kind != "list":
            raise QueryError(f"'in' takes a list such as [a,b] in '{term_text}'.", term_text)
        values = tuple(
            dict.fromkeys(_convert(field, spec, raw, term_text) for _, raw in token.value)
        )
        return Term(field, op, values)
    if token.kind == "list":
        raise QueryError(f"A list needs the 'in' operator in '{term_text}'.", term_text)
    return Term(field, op, _convert(field, spec, token.value, term_text))


def _convert(field: str, spec: FieldSpec, raw: str, term_text: str) -> Any:
    converters: dict[str, Callable[[str], Any]] = {
        "int": _to_int,
        "decimal": _to_decimal,
        "text": _to_text,
        "country": _to_country,
        "bool": _to_bool,
    }
    try:
        value = converters[spec.kind](raw)
    except (ValueError, InvalidOperation):
        raise QueryError(
            f"Bad value '{raw}' for {field} in '{term_text}': expected {_EXPECTED[spec.kind]}.",
            term_text,
        ) from None
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        raise QueryError(
            f"Value {raw} for {field} in '{term_text}' is out of range "
            f"({spec.low} to {spec.high}).",
            term_text,
        )
    return value


_EXPECTED = {
    "int": "a whole number",
    "decimal": "a number such as 1.5",
    "text": f"text of 1 to {MAX_TEXT_LENGTH} characters",
    "country": "an ISO 3166 alpha-2 country code such as US",
    "bool": "true or false",
}


def _to_int(raw: str) -> int:
    if not _INT.fullmatch(raw):
        raise ValueError(raw)
    return int(raw)


def _to_decimal(raw: str) -> Decimal:
    if not PLAIN_DECIMAL.fullmatch(raw):
        raise ValueError(raw)
    return Decimal(raw)


def _to_text(raw: str) -> str:
    value = " ".join(raw.replace("_", " ").split())
    if not value or len(value) > MAX_TEXT_LENGTH or not value.isprintable():
        raise ValueError(raw)
    return value


def _to_country(raw: str) -> str:
    if not _COUNTRY.fullmatch(raw):
        raise ValueError(raw)
    return raw.upper()


def _to_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)
