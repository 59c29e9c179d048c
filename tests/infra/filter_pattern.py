"""CloudWatch Logs' JSON filter patterns, evaluated as the CloudWatch Logs User Guide defines them.

moto stores a metric filter but never evaluates a JSON pattern (moto/logs/utils.py takes any
pattern starting with ``{`` as "unsupported" and matches every event), so a test there would
pass whatever the pattern said. The tests ask this module instead, the way tests/infra/iam.py
models IAM's condition operators.

Source: Amazon CloudWatch Logs User Guide, "Using filter patterns to match terms in JSON log
events" (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/matching-terms-json-log-events.html):
a pattern is ``{ SELECTOR OPERATOR VALUE }``; selectors start ``$.`` and name object keys
(``$.a.b``) or array items (``$.a[0]``); strings compare with ``=`` and ``!=``, unquoted or in
double quotes, ``*`` matching any run of characters; numbers compare with ``=``, ``!=``, ``<``,
``<=``, ``>``, ``>=``; ``&&`` and ``||`` join conditions, parentheses group them; a log event
that is not JSON matches no JSON pattern. ``IS NULL``, ``NOT EXISTS``, ``IS TRUE`` and
``IS FALSE`` test a field's presence and literal values. What is not modelled here raises,
rather than being taken as a match.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) | (?P<and>&&) | (?P<or>\|\|)
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<is>IS\s+NULL|NOT\s+EXISTS|IS\s+TRUE|IS\s+FALSE)\b
      | (?P<selector>\$(?:\.[A-Za-z0-9_@-]+|\[\d+\])+)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<word>[^\s()&|=<>!"]+)
    )""",
    re.VERBOSE,
)
_MISSING = object()


class PatternError(ValueError):
    """A pattern outside the modelled subset (or not a JSON pattern at all)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(body: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(body.rstrip()):
        match = _TOKEN.match(body, position)
        if match is None or match.end() == position:
            raise PatternError(f"cannot read {body[position:]!r}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


def _select(document: Any, selector: str) -> Any:
    node = document
    for key, index in re.findall(r"\.([A-Za-z0-9_@-]+)|\[(\d+)\]", selector[1:]):
        if key:
            if not isinstance(node, dict) or key not in node:
                return _MISSING
            node = node[key]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                return _MISSING
            node = node[int(index)]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(value: Any, operator: str, literal: _Token) -> bool:
    if value is _MISSING:
        return False
    if literal.kind == "word" and re.fullmatch(r"-?\d+(\.\d+)?", literal.text):
        if not _is_number(value):
            return False
        number, actual = float(literal.text), float(value)
        return {
            "=": actual == number,
            "!=": actual != number,
            "<": actual < number,
            "<=": actual <= number,
            ">": actual > number,
            ">=": actual >= number,
        }[operator]
    if operator not in ("=", "!="):
        raise PatternError(f"{operator} compares numbers only, not {literal.text}")
    text = json.loads(literal.text) if literal.kind == "string" else literal.text
    if not isinstance(value, str):
        return False
    regex = ".*".join(re.escape(part) for part in text.split("*"))
    equal = re.fullmatch(regex, value, flags=re.DOTALL) is not None
    return equal if operator == "=" else not equal


class _Parser:
    """``or := and ('||' and)*``, ``and := atom ('&&' atom)*``, ``atom := '(' or ')' | test``."""

    def __init__(self, tokens: list[_Token], document: Any) -> None:
        self.tokens, self.at, self.document = tokens, 0, document

    def _next(self, *kinds: str) -> _Token:
        if self.at >= len(self.tokens) or self.tokens[self.at].kind not in kinds:
            found = self.tokens[self.at].text if self.at < len(self.tokens) else "the end"
            raise PatternError(f"expected {' or '.join(kinds)}, found {found}")
        self.at += 1
        return self.tokens[self.at - 1]

    def _peek(self, kind: str) -> bool:
        return self.at < len(self.tokens) and self.tokens[self.at].kind == kind

    def parse(self) -> bool:
        result = self._or()
        if self.at != len(self.tokens):
            raise PatternError(f"unexpected {self.tokens[self.at].text}")
        return result

    def _or(self) -> bool:
        result = self._and()
        while self._peek("or"):
            self.at += 1
            result = self._and() or result  # both sides parsed, whatever the first said
        return result

    def _and(self) -> bool:
        result = self._atom()
        while self._peek("and"):
            self.at += 1
            result = self._atom() and result
        return result

    def _atom(self) -> bool:
        if self._peek("open"):
            self.at += 1
            result = self._or()
            self._next("close")
            return result
        value = _select(self.document, self._next("selector").text)
        if self._peek("is"):
            test = " ".join(self._next("is").text.split())
            return {
                "IS NULL": value is None,
                "NOT EXISTS": value is _MISSING,
                "IS TRUE": value is True,
                "IS FALSE": value is False,
            }[test]
        operator = self._next("op").text
        return _compare(value, operator, self._next("word", "string"))


def matches(pattern: str, message: str) -> bool:
    """Whether the JSON filter ``pattern`` (``{ ... }``) selects the log event ``message``."""
    stripped = pattern.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise PatternError(f"not a JSON filter pattern: {pattern!r}")
    tokens = _tokens(stripped[1:-1])
    try:
        document = json.loads(message)
    except ValueError:
        document = _MISSING
    parser = _Parser(tokens, document)
    result = parser.parse()  # the whole pattern is read, so a malformed one raises even here
    return document is not _MISSING and isinstance(document, dict | list) and result
