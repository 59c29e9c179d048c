"""tools/cfn_expand.py: Fn::ForEach expanded as CloudFormation's LanguageExtensions would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.cfn_expand import ExpandError, expand_template, main

TEMPLATE = {
    "Transform": "AWS::LanguageExtensions",
    "Parameters": {
        "Stacks": {"Type": "CommaDelimitedList", "Default": "app,app-staging"},
        "Name": {"Type": "String", "Default": "x"},
    },
    "Resources": {
        "Role": {"Type": "AWS::IAM::Role"},
        "Fn::ForEach::Deploy": [
            "Stack",
            {"Ref": "Stacks"},
            {
                "Deploy&{Stack}": {
                    "Type": "AWS::IAM::ManagedPolicy",
                    "Properties": {
                        "Description": {"Fn::Sub": "deploy ${Stack} (${Name})"},
                        "Roles": [{"Ref": "Role"}],
                        "Tag": {"Ref": "Stack"},
                    },
                }
            },
        ],
    },
}


def test_a_loop_over_a_list_parameter_makes_one_copy_each() -> None:
    expanded = expand_template(TEMPLATE)
    assert list(expanded["Resources"]) == ["Role", "Deployapp", "Deployappstaging"]
    staging = expanded["Resources"]["Deployappstaging"]["Properties"]
    # ${Stack} is replaced inside Sub strings; other ${...} are left for CloudFormation.
    assert staging["Description"] == {"Fn::Sub": "deploy app-staging (${Name})"}
    assert staging["Roles"] == [{"Ref": "Role"}]  # a Ref to anything else stays
    assert staging["Tag"] == "app-staging"  # a Ref to the identifier is the value
    assert expanded["Parameters"] == TEMPLATE["Parameters"]


def test_given_parameters_win_over_defaults() -> None:
    expanded = expand_template(TEMPLATE, {"Stacks": "one, two-2,three"})
    assert list(expanded["Resources"]) == ["Role", "Deployone", "Deploytwo2", "Deploythree"]
    assert list(expand_template(TEMPLATE, {"Stacks": ""})["Resources"]) == ["Role"]


def test_a_literal_collection_and_nested_loops() -> None:
    template = {
        "Outputs": {
            "Fn::ForEach::Outer": [
                "A",
                ["x", "y"],
                {"Fn::ForEach::Inner": ["B", ["1", "2"], {"O&{A}&{B}": {"Value": "${A}-${B}"}}]},
            ]
        }
    }
    outputs = expand_template(template)["Outputs"]
    assert outputs == {
        "Ox1": {"Value": "x-1"},
        "Ox2": {"Value": "x-2"},
        "Oy1": {"Value": "y-1"},
        "Oy2": {"Value": "y-2"},
    }


@pytest.mark.parametrize(
    ("loop", "why"),
    [
        (["S", {"Ref": "Name"}, {"R&{S}": {}}], "Name is not a CommaDelimitedList"),
        (["S", {"Ref": "Nothing"}, {"R&{S}": {}}], "Nothing is not a CommaDelimitedList"),
        (["S", {"Fn::Split": [",", "a,b"]}, {"R&{S}": {}}], "must be a list or a Ref"),
        (["S", ["a", "b"]], "expected [Identifier, Collection"),
        (["S", ["a", "a"], {"R&{S}": {}}], "Ra would be made twice"),
        (["S", ["Role"], {"${S}": {}}], "Role would be made twice"),
    ],
)
def test_loops_it_cannot_expand_are_errors(loop: list[object], why: str) -> None:
    template = {**TEMPLATE, "Resources": {"Role": {}, "Fn::ForEach::Bad": loop}}
    with pytest.raises(ExpandError, match=f"Fn::ForEach::Bad: .*{why[:20]}".replace("[", r"\[")):
        expand_template(template)


def test_the_command_writes_json_for_checkov(tmp_path: Path) -> None:
    source = tmp_path / "t.yml"
    source.write_text(
        "Parameters:\n  Stacks: {Type: CommaDelimitedList, Default: 'a,b'}\n"
        "Resources:\n  Fn::ForEach::L:\n    - S\n    - !Ref Stacks\n"
        "    - Q&{S}: {Type: AWS::SQS::Queue, Properties: {QueueName: !Sub '${S}-q'}}\n"
    )
    assert main([str(tmp_path / "out"), str(source), "--parameter", "Stacks=c"]) == 0
    written = json.loads((tmp_path / "out" / "t.json").read_text())
    assert written["Resources"] == {
        "Qc": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::Sub": "c-q"}}}
    }
    # checkov judges Conditions by the parameters' defaults: the given value becomes it.
    assert written["Parameters"]["Stacks"] == {"Type": "CommaDelimitedList", "Default": "c"}
    broken = tmp_path / "bad.yml"
    broken.write_text("Resources:\n  Fn::ForEach::L: [S]\n")
    assert main([str(tmp_path / "out"), str(broken)]) == 2
