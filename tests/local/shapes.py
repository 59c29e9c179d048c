"""The shape walker over botocore's ECS model, and a client that keeps every answer raw.

``walk`` checks a JSON document as ECS's JSON protocol sends it against a botocore shape: member
names, types, enums and required members, recursively. ``Wire`` is an ECS client whose every
answer to the service-deployment operations is kept as it crossed the wire, for ``problems()``:
each 200 walked against the operation's output shape, each error checked to be one the model
lists for the operation. The ``wire`` fixture (tests/local/conftest.py) asserts there are none.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.model import ListShape, MapShape, Shape, StructureShape

from bot.local.simulator import RolloutSimulator
from tests.conftest import LocalStack

OPERATIONS = (
    "ListServiceDeployments",
    "DescribeServiceDeployments",
    "DescribeServiceRevisions",
    "StopServiceDeployment",
    "ContinueServiceDeployment",
)
DEPLOYMENT_ARN = re.compile(
    r"arn:aws:ecs:[a-z0-9-]+:\d{12}:service-deployment/[\w-]+/[\w-]+/[A-Za-z0-9_-]{22}"
)
REVISION_ARN = re.compile(r"arn:aws:ecs:[a-z0-9-]+:\d{12}:service-revision/[\w-]+/[\w-]+/\d{19}")
MODEL = botocore.session.get_session().get_service_model("ecs")


def walk(shape: Shape, value: Any, path: str = "$") -> list[str]:
    """Everything in ``value`` (a JSON document as ECS's JSON protocol sends it) that botocore's
    ``shape`` does not allow: unknown or missing required members, wrong types, values outside
    an enum. Timestamps travel as epoch seconds in this protocol."""
    problems: list[str] = []
    kind = shape.type_name
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return [f"{path}: {shape.name} wants an object, got {type(value).__name__}"]
        for name in shape.required_members:
            if name not in value:
                problems.append(f"{path}: required member {name!r} of {shape.name} missing")
        for name, item in value.items():
            if name not in shape.members:
                problems.append(f"{path}: {shape.name} has no member {name!r}")
            else:
                problems += walk(shape.members[name], item, f"{path}.{name}")
    elif isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{path}: {shape.name} wants a list, got {type(value).__name__}"]
        for i, item in enumerate(value):
            problems += walk(shape.member, item, f"{path}[{i}]")
    elif isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{path}: {shape.name} wants an object, got {type(value).__name__}"]
        for key, item in value.items():
            problems += walk(shape.key, key, f"{path}<key>")
            problems += walk(shape.value, item, f"{path}[{key!r}]")
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: {shape.name} wants a string, got {value!r}")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.name} {shape.enum}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: {shape.name} wants an integer, got {value!r}")
    elif kind in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"{path}: {shape.name} wants a number, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: {shape.name} wants a boolean, got {value!r}")
    elif kind == "timestamp":
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"{path}: {shape.name} wants epoch seconds, got {value!r}")
    else:
        problems.append(f"{path}: no check for {kind} ({shape.name})")
    return problems


def wire_problems(operation: str, status: int, body: bytes) -> list[str]:
    """What is wrong with one answer to ``operation``: a 200 against its output shape, an
    error against the errors the model lists for it."""
    model = MODEL.operation_model(operation)
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return [f"{operation}: answer {status} is not JSON: {body[:200]!r}"]
    if status == 200:
        return [f"{operation} {p}" for p in walk(model.output_shape, document)]
    code = str(document.get("__type", "")).rsplit("#", 1)[-1]
    documented = {e.name for e in model.error_shapes}
    problems = [] if code in documented else [f"{operation}: error {code!r} not in {documented}"]
    if code in documented:
        fields = {k: v for k, v in document.items() if k != "__type"}
        problems += [f"{operation} {p}" for p in walk(MODEL.shape_for(code), fields)]
    return problems


class Wire:
    """An ECS client whose every answer to the service-deployment operations is kept raw."""

    def __init__(self) -> None:
        self.ecs = boto3.client("ecs", config=Config(retries={"max_attempts": 1}))
        self.seen: list[tuple[str, int, bytes]] = []
        self.ecs.meta.events.register("before-parse.ecs.*", self._keep)

    def _keep(self, operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
        if operation_model.name in OPERATIONS:
            self.seen.append(
                (operation_model.name, response_dict["status_code"], response_dict["body"])
            )

    def problems(self) -> list[str]:
        return [p for op, status, body in self.seen for p in wire_problems(op, status, body)]

    # -- the operations, as the engine calls them --

    def arns(self, stack: LocalStack, **filters: Any) -> list[str]:
        answer = self.ecs.list_service_deployments(
            cluster=stack.settings.ecs_cluster, service=stack.settings.ecs_service, **filters
        )
        return [d["serviceDeploymentArn"] for d in answer["serviceDeployments"]]

    def get(self, arn: str) -> dict[str, Any]:
        answer = self.ecs.describe_service_deployments(serviceDeploymentArns=[arn])
        assert answer["failures"] == []
        [deployment] = answer["serviceDeployments"]
        return dict(deployment)

    def revision(self, arn: str) -> dict[str, Any]:
        answer = self.ecs.describe_service_revisions(serviceRevisionArns=[arn])
        assert answer["failures"] == []
        [revision] = answer["serviceRevisions"]
        return dict(revision)


def latest(wire: Wire, stack: LocalStack) -> str:
    return wire.arns(stack)[0]


def follow(
    wire: Wire, sim: RolloutSimulator, arn: str, max_ticks: int = 80
) -> list[dict[str, Any]]:
    """Tick until the service deployment is final; every DescribeServiceDeployments seen."""
    seen = [wire.get(arn)]
    for _ in range(max_ticks):
        if seen[-1]["status"] in (
            "SUCCESSFUL",
            "STOPPED",
            "ROLLBACK_SUCCESSFUL",
            "ROLLBACK_FAILED",
        ):
            return seen
        sim.tick()
        seen.append(wire.get(arn))
    raise AssertionError(f"not final after {max_ticks} ticks: {seen[-1]}")


def statuses(seen: list[dict[str, Any]]) -> list[str]:
    """The distinct statuses in order of first appearance."""
    out: list[str] = []
    for d in seen:
        if d["status"] not in out:
            out.append(d["status"])
    return out
