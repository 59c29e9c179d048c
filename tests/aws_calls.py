"""Every AWS action any in-process AwsClient called during this test session (botocore hooks)."""

from __future__ import annotations

from bot.deploy.aws import CALL_OBSERVERS

CALLED: set[tuple[str, str]] = set()


def _record(service: str, operation: str) -> None:
    CALLED.add((service, operation))


if _record not in CALL_OBSERVERS:
    CALL_OBSERVERS.append(_record)
