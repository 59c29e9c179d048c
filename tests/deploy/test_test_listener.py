"""The test listener's check before anyone continues a paused deployment (bot/deploy/pausing.py
``check_test_listener``), against the hello service served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bot.deploy.pausing import check_test_listener
from bot.deploy.records import DeploymentRecord
from bot.local.listener import TestListener
from bot.local.net import free_port
from service.app import Release

SUFFIX = "-ecr-ecs-fargate"
NOW = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
RECORD = DeploymentRecord(
    id="d-20261206-140000-abcd",
    service="hello/hello",
    kind="deploy",
    tag="v4.4.0-ecr-ecs-fargate",
    image="repo@sha256:new",
    task_definition="arn:aws:ecs:eu-west-1:1:task-definition/hello:2",
    previous_task_definition="arn:aws:ecs:eu-west-1:1:task-definition/hello:1",
    previous_tag="v4.3.0-ecr-ecs-fargate",
    ecs_deployment_id="ecs-svc/1",
    who="U0ANA",
    who_display="ana",
    source="slack",
    reason="",
    started_at=NOW,
    commit="bcd2345",
    previous_commit="abc1234",
)


@pytest.fixture(scope="module")
def listener() -> Iterator[TestListener]:
    with TestListener(Release("v4.3.0", "abc1234ffffffffffffffffffffffffffffffff")) as running:
        yield running


def test_the_old_release_still_answering_is_said(listener: TestListener) -> None:
    listener.failing = False
    listener.answering("v4.3.0", "abc1234ffffffffffffffffffffffffffffffff")
    check = check_test_listener(f"{listener.url}/health", RECORD, SUFFIX, NOW)
    assert (check.status, check.verdict, check.ok) == (200, "old", False)
    assert check.latency_ms is not None and check.latency_ms >= 0
    assert check.describe().startswith("200 in ") and "v4.3.0 (abc1234fffff)" in check.describe()


def test_the_new_release_answering_is_good(listener: TestListener) -> None:
    listener.failing = False
    listener.answering("v4.4.0-ecr-ecs-fargate", "bcd2345eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
    check = check_test_listener(f"{listener.url}/health", RECORD, SUFFIX, NOW)
    assert (check.status, check.verdict, check.ok) == (200, "new", True)
    # Without commits, the release's tag says it (with or without the tags' suffix).
    untold = DeploymentRecord(**{**RECORD.__dict__, "commit": None, "previous_commit": None})
    listener.answering("v4.4.0", "dev")
    assert check_test_listener(f"{listener.url}/health", untold, SUFFIX, NOW).verdict == "new"
    listener.answering("v9.9.9", "dev")
    assert check_test_listener(f"{listener.url}/health", untold, SUFFIX, NOW).verdict == "other"


def test_an_error_or_no_answer_is_red(listener: TestListener) -> None:
    listener.failing = True
    try:
        check = check_test_listener(f"{listener.url}/health", RECORD, SUFFIX, NOW)
    finally:
        listener.failing = False
    assert (check.status, check.verdict) == (503, "error")
    assert "HTTP 503" in check.describe()
    nobody = f"http://127.0.0.1:{free_port()}/health"
    check = check_test_listener(nobody, RECORD, SUFFIX, NOW)
    assert (check.status, check.verdict) == (None, "error")
    assert check.describe().startswith(f"no answer from {nobody}: ")
    # Not the service's JSON: the page is not /health.
    check = check_test_listener(f"{listener.url}/", RECORD, SUFFIX, NOW)
    assert (check.status, check.verdict, check.error) == (200, "error", "not the service's JSON")
