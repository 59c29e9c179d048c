"""The ``wire`` fixture: an ECS client whose answers must all fit botocore's model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.local.aws import MotoServer
from tests.local.shapes import Wire


@pytest.fixture
def wire(aws: MotoServer) -> Iterator[Wire]:
    """The ECS client of a test; at its end, every answer it saw must fit botocore's model."""
    seen = Wire()
    yield seen
    assert seen.seen, "the test saw no service-deployment answer"
    assert seen.problems() == []
