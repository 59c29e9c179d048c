"""IAM's condition operators, as the IAM User Guide defines them, to evaluate trust policies.

moto accepts any web identity for any role (its trust check knows only StringEquals and
ignores the rest), so the tests ask these few rules instead. Source: IAM User Guide, "IAM
JSON policy elements: Condition operators" (StringEquals: exact, case-sensitive; StringLike:
case-sensitive, ``*`` any run of characters and ``?`` any one character, anywhere in the
string; ArnEquals/ArnLike: the same, for each colon-delimited part of an ARN) and
"Condition element" (operators in one block, and keys in one operator, must all hold; several
values for one key: any may match). The bot's role is held to the engine's calls the same way
(:func:`identity_allows`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def string_like(pattern: str, value: str) -> bool:
    """IAM's StringLike for one pattern."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def arn_like(pattern: str, value: str) -> bool:
    """IAM's ArnLike (and ArnEquals, which the User Guide defines the same way): each of the
    six colon-separated parts matched on its own, ``*`` and ``?`` wildcards within a part."""
    patterns, values = pattern.split(":", 5), value.split(":", 5)
    return len(patterns) == len(values) == 6 and all(
        string_like(p, v) for p, v in zip(patterns, values, strict=True)
    )


OPERATORS = {
    "StringEquals": lambda expected, value: expected == value,
    "StringLike": string_like,
    "ArnEquals": arn_like,
    "ArnLike": arn_like,
}


def _values(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def conditions_hold(condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    """Whether a statement's ``Condition`` holds for a request carrying ``context`` keys.

    A key the request lacks fails its condition (no ...IfExists operator is used here).
    An operator this module does not know raises, rather than being taken as satisfied.
    """
    for operator, keys in condition.items():
        if operator not in OPERATORS:
            raise ValueError(f"condition operator {operator} is not modelled here")
        test = OPERATORS[operator]
        for key, expected in keys.items():
            if key not in context:
                return False
            if not any(test(e, context[key]) for e in _values(expected)):
                return False
    return True


def trust_allows(
    document: Mapping[str, Any], action: str, federated: str, context: Mapping[str, str]
) -> bool:
    """Whether a trust policy lets a token of provider ``federated`` with ``context`` do ``action``.

    Deny statements win over Allow ones; with no matching Allow the answer is no.
    """
    allowed = False
    for statement in document["Statement"]:
        principal = statement.get("Principal", {})
        if federated not in _values(principal.get("Federated", [])):
            continue
        if action not in _values(statement["Action"]):
            continue
        if not conditions_hold(statement.get("Condition", {}), context):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def identity_allows(
    statements: list[dict[str, Any]], action: str, resource: str, context: Mapping[str, str]
) -> bool:
    """Whether an identity policy's ``statements`` allow ``action`` on ``resource`` (an ARN,
    or ``*`` for actions without one) for a request carrying ``context`` keys. Resource
    patterns match as StringLike does ("IAM JSON policy elements: Resource"); a Deny wins."""
    allowed = False
    for statement in statements:
        if action not in _values(statement["Action"]):
            continue
        if not any(string_like(p, resource) for p in _values(statement["Resource"])):
            continue
        if not conditions_hold(statement.get("Condition", {}), context):
            continue
        if statement["Effect"] == "Deny":
            return False
        allowed = True
    return allowed
