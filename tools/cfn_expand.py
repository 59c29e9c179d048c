"""Expand the Fn::ForEach loops of our templates, as CloudFormation's AWS::LanguageExtensions would.

    python -m tools.cfn_expand OUT_DIR TEMPLATE... [--parameter KEY=VALUE ...]

checkov does not know the transform: it skips a loop's resources and logs a warning. So
``make lint-cfn`` hands checkov the templates expanded with their parameters' defaults, and
the tests expand bot.yml with two service stacks to hold its role to the engine's calls.

What is expanded (the subset of the transform our templates use, per "Fn::ForEach" in the
CloudFormation Template Reference): ``Fn::ForEach::Name: [Identifier, Collection,
{OutputKey: OutputValue}]`` anywhere in a mapping; the collection a list or a ``Ref`` to a
CommaDelimitedList parameter; in the fragment, ``${Identifier}`` in strings and keys, and
``&{Identifier}`` (the value without its non-alphanumeric characters, for logical ids),
and ``{"Ref": Identifier}``. Anything else is left alone, and a loop of another shape is
an error rather than a silent skip.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

FOR_EACH = "Fn::ForEach::"


class ExpandError(ValueError):
    """A loop this expander does not understand, or a parameter it cannot resolve."""


def load(path: Path) -> dict[str, Any]:
    """A YAML or JSON template as plain data (``!Sub`` becomes ``{"Fn::Sub": ...}``)."""
    # cfn-lint's loader knows the short intrinsic tags; the JSON round trip drops its node types.
    return dict(json.loads(json.dumps(cfn_yaml.load(str(path)))))


def parameter_values(template: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, Any]:
    """Each parameter's value: ``given``, else its Default; lists split as CloudFormation does."""
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        raw = given.get(name, spec.get("Default"))
        if raw is None:
            continue
        if spec.get("Type") == "CommaDelimitedList":
            values[name] = [] if str(raw) == "" else [part.strip() for part in str(raw).split(",")]
        else:
            values[name] = raw
    return values


def _substitute(node: Any, identifier: str, value: str) -> Any:
    alnum = re.sub(r"[^A-Za-z0-9]", "", value)

    def text(s: str) -> str:
        return s.replace("${" + identifier + "}", value).replace("&{" + identifier + "}", alnum)

    if isinstance(node, str):
        return text(node)
    if isinstance(node, list):
        return [_substitute(item, identifier, value) for item in node]
    if isinstance(node, dict):
        if node == {"Ref": identifier}:
            return value
        return {text(k): _substitute(v, identifier, value) for k, v in node.items()}
    return node


def _collection(spec: Any, parameters: Mapping[str, Any], loop: str) -> list[str]:
    if isinstance(spec, list):
        return [str(item) for item in spec]
    if isinstance(spec, dict) and set(spec) == {"Ref"}:
        name = spec["Ref"]
        if name not in parameters or not isinstance(parameters[name], list):
            raise ExpandError(f"{loop}: {name} is not a CommaDelimitedList parameter with a value")
        return [str(item) for item in parameters[name]]
    raise ExpandError(f"{loop}: the collection must be a list or a Ref to a parameter")


def expand(node: Any, parameters: Mapping[str, Any]) -> Any:
    """``node`` with every Fn::ForEach loop replaced by its copies."""
    if isinstance(node, list):
        return [expand(item, parameters) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if not key.startswith(FOR_EACH):
            out[key] = expand(value, parameters)
            continue
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], dict)):
            raise ExpandError(f"{key}: expected [Identifier, Collection, {{OutputKey: Value}}]")
        identifier, spec, fragment = value
        for item in _collection(spec, parameters, key):
            for made_key, made in expand(
                _substitute(fragment, identifier, item), parameters
            ).items():
                if made_key in out or made_key in node:
                    raise ExpandError(f"{key}: {made_key} would be made twice")
                out[made_key] = made
    return out


def expand_template(
    template: Mapping[str, Any], given: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The template as CloudFormation would process it for these parameter values."""
    parameters = parameter_values(template, given or {})
    expanded = dict(expand(dict(template), parameters))
    return expanded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cfn_expand", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("templates", type=Path, nargs="+")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.parameter)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.templates:
        try:
            expanded = expand_template(load(path), given)
        except ExpandError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        # checkov drops the resources whose Condition is false for the parameters' defaults:
        # the values given here become the defaults, so it checks the template as they make
        # it (service.yml with Strategy=BLUE_GREEN: the load balancer and its listeners).
        for key, value in given.items():
            if key in expanded.get("Parameters", {}):
                expanded["Parameters"][key] = {**expanded["Parameters"][key], "Default": value}
        # JSON: checkov reads it, and no YAML tag is lost on the way.
        (args.out / f"{path.stem}.json").write_text(json.dumps(expanded, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
