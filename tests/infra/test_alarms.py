"""The service stack's health signal: its 5xx metric filter reads the service's own access lines,
the alarm watches that metric, and ECS rolls back on it unless AutoRollback says not to."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import free_port, wait_http
from tests.infra.filter_pattern import PatternError, matches
from tests.infra.templates import load_template, resolve_conditions, resource

# The service as its image runs it (service.__main__.serve: uvicorn, the service's logging),
# with one route added that fails as a handler with a bug would: what a 5xx looks like in its
# log. Everything else is the production app.
FAILING_SERVICE = textwrap.dedent(
    """
    import sys
    from service.__main__ import serve
    from service.app import create_app

    app = create_app()

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("a handler with a bug")

    serve(app, "127.0.0.1", int(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return load_template("service")


@contextlib.contextmanager
def _running() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", FAILING_SERVICE, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def emitted() -> dict[str, list[str]]:
    """What the service wrote while answering 200, 404 and 500, line by line, per stream."""
    with _running() as (base, proc):
        statuses = [_status_of(base + path) for path in ("/", "/nope", "/boom", "/boom", "/")]
        assert statuses == [200, 404, 500, 500, 200]
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return {"stdout": out.splitlines(), "stderr": err.splitlines()}


def _pattern(template: dict[str, Any]) -> str:
    return str(resource(template, "ServerErrorsFilter")["FilterPattern"])


def test_the_filter_counts_exactly_the_services_5xx_lines(
    service: dict[str, Any], emitted: dict[str, list[str]]
) -> None:
    pattern = _pattern(service)
    access = [line for line in emitted["stdout"] if line.startswith("{")]
    # /health (waited on) and the five requests: one access line each, every one JSON.
    assert len(access) >= 6 and all('"type":"access"' in line for line in access), access
    counted = [line for line in emitted["stdout"] + emitted["stderr"] if matches(pattern, line)]
    assert len(counted) == 2, counted
    assert all('"status":500' in line and '"path":"/boom"' in line for line in counted)
    # The traceback and uvicorn's start and stop lines are on stderr, plain: never counted.
    assert any("RuntimeError: a handler with a bug" in line for line in emitted["stderr"])


def test_the_alarm_watches_the_filters_metric_and_fails_deployments(
    service: dict[str, Any],
) -> None:
    (transformation,) = resource(service, "ServerErrorsFilter")["MetricTransformations"]
    alarm = resource(service, "ServerErrorsAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        transformation["MetricNamespace"],
        transformation["MetricName"],
    )
    # A quiet minute publishes 0 (DefaultValue) and no traffic is no breach.
    assert transformation["DefaultValue"] == 0 and alarm["TreatMissingData"] == "notBreaching"
    assert alarm["Statistic"] == "Sum" and alarm["Period"] == 60
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == {"Ref": "ServerErrorThreshold"}
    assert resource(service, "ServerErrorsFilter")["LogGroupName"] == {"Ref": "LogGroup"}
    deployment = resource(service, "Service")["DeploymentConfiguration"]
    assert deployment["Alarms"]["AlarmNames"] == [{"Ref": "ServerErrorsAlarm"}]
    assert deployment["Alarms"]["Enable"] is True
    assert deployment["BakeTimeInMinutes"] == {"Ref": "BakeTimeInMinutes"}
    # Named after the stack, as deploybot's messages and the bot's role expect.
    assert alarm["AlarmName"] == {"Fn::Sub": "${AWS::StackName}-5xx"}


@pytest.mark.parametrize(
    ("parameters", "rollback"),
    [({}, True), ({"AutoRollback": "true"}, True), ({"AutoRollback": "false"}, False)],
)
def test_rollback_is_on_unless_the_stack_turns_it_off(
    service: dict[str, Any], parameters: dict[str, str], rollback: bool
) -> None:
    """Both ways ECS fails a deployment roll back, or neither does (releases that migrate
    data: docs/OPERATIONS.md)."""
    deployment = resource(resolve_conditions(service, parameters), "Service")[
        "DeploymentConfiguration"
    ]
    assert deployment["Alarms"]["Rollback"] is rollback
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": rollback}
    assert service["Parameters"]["AutoRollback"]["AllowedValues"] == ["true", "false"]


def test_the_stack_exports_the_alarm_name(service: dict[str, Any]) -> None:
    output = service["Outputs"]["ServerErrorsAlarmName"]
    assert output["Value"] == {"Ref": "ServerErrorsAlarm"}
    assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-ServerErrorsAlarmName"}


# --- the pattern model itself: the User Guide's examples, so it cannot agree with anything ---


@pytest.mark.parametrize(
    ("pattern", "message", "expected"),
    [
        ('{ $.eventType = "UpdateTrail" }', '{"eventType": "UpdateTrail"}', True),
        ('{ $.eventType = "UpdateTrail" }', '{"eventType": "DeleteTrail"}', False),
        ("{ $.sourceIPAddress != 123.123.* }", '{"sourceIPAddress": "10.0.0.1"}', True),
        ("{ $.sourceIPAddress != 123.123.* }", '{"sourceIPAddress": "123.123.4.5"}', False),
        ("{ $.status >= 500 }", '{"status": 500}', True),
        ("{ $.status >= 500 }", '{"status": 499}', False),
        ("{ $.status >= 500 }", '{"status": "500"}', False),  # a string is not a number
        ("{ $.status >= 500 }", "status 500", False),  # not JSON: no JSON pattern matches
        ("{ $.status >= 500 }", '{"code": 500}', False),
        ("{ $.a.b[1] = 2 }", '{"a": {"b": [1, 2]}}', True),
        ('{ ($.x = 1 || $.y = "z") && $.ok IS TRUE }', '{"y": "z", "ok": true}', True),
        ('{ ($.x = 1 || $.y = "z") && $.ok IS TRUE }', '{"y": "z", "ok": false}', False),
        ("{ $.gone NOT EXISTS }", "{}", True),
        ("{ $.nothing IS NULL }", '{"nothing": null}', True),
    ],
)
def test_filter_pattern_model(pattern: str, message: str, expected: bool) -> None:
    assert matches(pattern, message) is expected


@pytest.mark.parametrize("pattern", ["status 500", "{ $.status >== 500 }", "{ $.s > abc }"])
def test_filter_pattern_model_refuses_what_it_does_not_know(pattern: str) -> None:
    with pytest.raises(PatternError):
        matches(pattern, '{"status": 500, "s": 1}')
