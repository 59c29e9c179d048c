"""CI's role (cloudformation/ci.yml): GitHub's tokens for this repository's release tags only,
and a push to the service's and the bot's ECR repositories, nothing else.

The trust is evaluated with IAM's own condition rules (tests/infra/iam.py) against the subjects
GitHub mints, in the shapes its OpenID Connect reference documents: once on the template, once
on the role that CloudFormation (moto's) made from it, with every intrinsic resolved.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.infra.iam import string_like, trust_allows
from tests.infra.templates import (
    load_template,
    render,
    resource,
    resources_of_type,
    role_actions,
    role_statements,
    substitute,
)
from tools.stack import main

ISSUER = "token.actions.githubusercontent.com"
ACCOUNT, REGION = "123456789012", "eu-west-1"
PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"
REPO = "octo-org/deploybot"
STACK = "hello-world-ecr-ecs-fargate"
ROOT = Path(__file__).parents[2]
ASSUME = "sts:AssumeRoleWithWebIdentity"

# The subject of release.yml's docker job on tag v4.4.0-ecr-ecs-fargate, with the repository's
# subject template ["repo", "ref", "context"] (docs/CICD.md sets it): GitHub joins each claim as
# "name:value", "context" being "environment:NAME" for a job in an environment.
RELEASE_RUN = f"repo:{REPO}:ref:refs/tags/v4.4.0-ecr-ecs-fargate:environment:release"

ACCEPTED = {
    "the release tag's docker job": RELEASE_RUN,
    "a later major release": (
        f"repo:{REPO}:ref:refs/tags/v10.0.1-ecr-ecs-fargate:environment:release"
    ),
}
REFUSED = {
    "the main branch": f"repo:{REPO}:ref:refs/heads/main:environment:release",
    "a branch named like a release": (
        f"repo:{REPO}:ref:refs/heads/v4.4.0-ecr-ecs-fargate:environment:release"
    ),
    "a pull request's merge ref": f"repo:{REPO}:ref:refs/pull/7/merge:environment:release",
    "another tag": f"repo:{REPO}:ref:refs/tags/nightly:environment:release",
    "another environment": (
        f"repo:{REPO}:ref:refs/tags/v4.4.0-ecr-ecs-fargate:environment:staging"
    ),
    "an environment that only starts alike": (
        f"repo:{REPO}:ref:refs/tags/v4.4.0-ecr-ecs-fargate:environment:release-preview"
    ),
    # A job with no environment: its context is the ref itself.
    "a job outside the environment": (
        f"repo:{REPO}:ref:refs/tags/v4.4.0-ecr-ecs-fargate:ref:refs/tags/v4.4.0-ecr-ecs-fargate"
    ),
    # GitHub's default template, i.e. before the repository's template is set.
    "the default subject in the environment": f"repo:{REPO}:environment:release",
    "the default subject on the tag": f"repo:{REPO}:ref:refs/tags/v4.4.0-ecr-ecs-fargate",
    "the default subject of a pull request": f"repo:{REPO}:pull_request",
    "a fork's release": (
        "repo:someone/deploybot:ref:refs/tags/v4.4.0-ecr-ecs-fargate:environment:release"
    ),
    "a repository whose name extends ours": (
        f"repo:{REPO}-fork:ref:refs/tags/v4.4.0-ecr-ecs-fargate:environment:release"
    ),
}

# Amazon ECR User Guide, "IAM permissions for pushing an image to an Amazon ECR private
# repository": this set on the repository, GetAuthorizationToken on "*".
ECR_PUSH = {
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
}
REPOSITORY_ARN = "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/"


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load_template("ci")


def _defaults(template: dict[str, Any], **given: str) -> dict[str, str]:
    values = {k: str(p["Default"]) for k, p in template["Parameters"].items() if "Default" in p}
    return values | given


def _claims(sub: str, aud: str = "sts.amazonaws.com") -> dict[str, str]:
    return {f"{ISSUER}:sub": sub, f"{ISSUER}:aud": aud}


def _trust_as_deployed(template: dict[str, Any], **given: str) -> dict[str, Any]:
    """The trust policy with this template's ``!Sub`` and provider resolved for ``given``."""
    trust = resource(template, "ReleaseRole")["AssumeRolePolicyDocument"]
    parameters = _defaults(template, **given)
    (statement,) = trust["Statement"]
    conditions = {
        operator: {
            key: substitute(render(value), parameters | {"AWS::AccountId": ACCOUNT})
            for key, value in keys.items()
        }
        for operator, keys in statement["Condition"].items()
    }
    resolved = {**statement, "Principal": {"Federated": PROVIDER}, "Condition": conditions}
    return {**trust, "Statement": [resolved]}


def test_the_role_trusts_only_githubs_provider_for_web_identities(ci: dict[str, Any]) -> None:
    (statement,) = resource(ci, "ReleaseRole")["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ASSUME  # no sts:AssumeRole, no sts:TagSession
    assert set(statement["Principal"]) == {"Federated"}
    created, existing = statement["Principal"]["Federated"]["Fn::If"][1:]
    assert created == {"Ref": "GitHubOidcProvider"}
    assert render(existing) == (
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/" + ISSUER
    )
    provider = resource(ci, "GitHubOidcProvider")
    assert provider["Url"] == f"https://{ISSUER}"
    assert provider["ClientIdList"] == ["sts.amazonaws.com"]
    # An account may already have the provider (one per URL): creating it is optional.
    assert ci["Resources"]["GitHubOidcProvider"]["Condition"] == "CreateProvider"
    assert ci["Parameters"]["CreateOidcProvider"]["AllowedValues"] == ["true", "false"]


def test_the_trust_evaluates_audience_and_subject(ci: dict[str, Any]) -> None:
    (statement,) = resource(ci, "ReleaseRole")["AssumeRolePolicyDocument"]["Statement"]
    condition = statement["Condition"]
    assert condition["StringEquals"] == {f"{ISSUER}:aud": "sts.amazonaws.com"}
    assert set(condition["StringLike"]) == {f"{ISSUER}:sub"}
    assert render(condition["StringLike"][f"{ISSUER}:sub"]) == (
        "repo:${GitHubRepository}:ref:refs/tags/${ReleaseTagPattern}"
        ":environment:${GitHubEnvironment}"
    )


@pytest.mark.parametrize("sub", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_release_tags_of_this_repository_may_assume_the_role(ci: dict[str, Any], sub: str) -> None:
    trust = _trust_as_deployed(ci, GitHubRepository=REPO)
    assert trust_allows(trust, ASSUME, PROVIDER, _claims(sub))


@pytest.mark.parametrize("sub", REFUSED.values(), ids=REFUSED.keys())
def test_nothing_else_may_assume_the_role(ci: dict[str, Any], sub: str) -> None:
    trust = _trust_as_deployed(ci, GitHubRepository=REPO)
    assert not trust_allows(trust, ASSUME, PROVIDER, _claims(sub))


def test_a_token_for_another_audience_or_issuer_is_refused(ci: dict[str, Any]) -> None:
    trust = _trust_as_deployed(ci, GitHubRepository=REPO)
    assert not trust_allows(
        trust, ASSUME, PROVIDER, _claims(RELEASE_RUN, aud=f"https://github.com/{REPO}")
    )
    other = f"arn:aws:iam::{ACCOUNT}:oidc-provider/gitlab.com"
    assert not trust_allows(trust, ASSUME, other, _claims(RELEASE_RUN))
    assert not trust_allows(trust, "sts:AssumeRole", PROVIDER, _claims(RELEASE_RUN))


def test_parameters_cannot_widen_the_subject(ci: dict[str, Any]) -> None:
    """A ":" would let a value reach into the next claim; the patterns keep it out."""
    parameters = ci["Parameters"]
    for name, allowed, refused in [
        ("GitHubRepository", ["octo-org/deploybot", "a/b.c_d-e"], ["octo-org/*", "o:x/y", "o/y:z"]),
        ("GitHubEnvironment", ["release", "prod-eu_1"], ["*", "release:ref", "rel?ase", ""]),
        ("ReleaseTagPattern", ["v*-ecr-ecs-fargate", "v*"], ["a:b", "v?.0", ""]),
    ]:
        pattern = re.compile(parameters[name]["AllowedPattern"])
        assert all(pattern.fullmatch(v) for v in allowed), name
        assert not any(pattern.fullmatch(v) for v in refused), name


def test_the_outputs_say_what_to_set_on_github(ci: dict[str, Any]) -> None:
    outputs = ci["Outputs"]
    assert outputs["ReleaseRoleArn"]["Value"] == {"Fn::GetAtt": ["ReleaseRole", "Arn"]}
    # The template the trust's subject pattern is written for (docs/CICD.md puts it on GitHub).
    assert json.loads(outputs["SubjectTemplate"]["Value"]) == {
        "use_default": False,
        "include_claim_keys": ["repo", "ref", "context"],
    }


def test_the_string_like_model_follows_iam() -> None:
    # IAM User Guide, condition operators: case-sensitive; * any run, ? one character.
    assert string_like("repo:o/r:ref:refs/tags/v*", "repo:o/r:ref:refs/tags/v1.2.3")
    assert not string_like("repo:o/r:*", "repo:O/R:ref:refs/heads/main")
    assert string_like("v?", "v1") and not string_like("v?", "v12")
    assert not string_like("a.b", "axb")  # "." is not a wildcard


TABLE_ARN = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/"


def test_the_role_pushes_to_the_two_repositories_and_nothing_else(ci: dict[str, Any]) -> None:
    role = resource(ci, "ReleaseRole")
    assert "ManagedPolicyArns" not in role and len(role["Policies"]) == 1
    granted = role_actions(role_statements(ci, "ReleaseRole"))
    assert granted.pop("ecr:GetAuthorizationToken") == ["*"]
    assert granted.pop("dynamodb:GetItem") == [TABLE_ARN + "${ServiceStackName}-deployments"]
    assert granted.pop("ssm:GetParameter") == [
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/"
        "${ServiceStackName}-bot/deploybot.toml"
    ]
    assert set(granted) == ECR_PUSH
    repositories = [
        REPOSITORY_ARN + "${ServiceStackName}",
        REPOSITORY_ARN + "${ServiceStackName}-bot",
    ]
    for action, resources in granted.items():
        assert resources == repositories, action


def test_star_only_for_the_login_token(ci: dict[str, Any]) -> None:
    for statement in role_statements(ci, "ReleaseRole"):
        assert statement["Effect"] == "Allow"
        assert ("Condition" in statement) == (statement["Sid"] == "ReadFreezes")
        if statement["Resource"] == "*":
            assert statement["Action"] == "ecr:GetAuthorizationToken", statement["Sid"]


def test_the_two_repositories_are_the_stacks_own(ci: dict[str, Any]) -> None:
    """The names the role grants are the ones service.yml and bot.yml give their repositories."""
    service, bot = load_template("service"), load_template("bot")
    (service_repo,) = resources_of_type(service, "AWS::ECR::Repository").values()
    (bot_repo,) = resources_of_type(bot, "AWS::ECR::Repository").values()
    # service.yml names its repository after its stack: the bot's and CI's ServiceStackName.
    names = {
        render(service_repo["Properties"]["RepositoryName"]).replace(
            "${AWS::StackName}", "${ServiceStackName}"
        ),
        render(bot_repo["Properties"]["RepositoryName"]),
    }
    granted = role_actions(role_statements(ci, "ReleaseRole"))["ecr:PutImage"]
    assert {arn.removeprefix(REPOSITORY_ARN) for arn in granted} == names
    assert (
        ci["Parameters"]["ServiceStackName"]["Default"]
        == bot["Parameters"]["ServiceStackName"]["Default"]
    )


def test_ci_reads_the_freezes_of_the_bots_table_and_no_other_item(ci: dict[str, Any]) -> None:
    """`deploybot notify` in release.yml reads a target's freeze (one GetItem on its FREEZE#
    key) to say it in the notice; the role reaches no lock, record, request or notice."""
    (statement,) = [s for s in role_statements(ci, "ReleaseRole") if s["Sid"] == "ReadFreezes"]
    assert statement["Action"] == "dynamodb:GetItem"
    bot = load_template("bot")
    table = render(resource(bot, "DeploymentsTable")["TableName"])
    assert statement["Resource"] == {"Fn::Sub": TABLE_ARN + table}
    (patterns,) = statement["Condition"]["ForAllValues:StringLike"].values()
    assert list(statement["Condition"]["ForAllValues:StringLike"]) == ["dynamodb:LeadingKeys"]

    def readable(pk: str) -> bool:
        return any(string_like(p, pk) for p in patterns)

    # Every kind of item the code writes, by the prefix of its partition key: only the freeze
    # may be read. The key scheme is in one place, bot/deploy/table.py's Keys (issue 25).
    scheme = (ROOT / "bot" / "deploy" / "table.py").read_text()
    prefixes = (
        {m.group(1) for m in re.finditer(r'_key\("([A-Z]+)"', scheme)}
        | {m.group(1) for m in re.finditer(r'"pk": \{"S": f"([A-Z]+)#', scheme)}
        | {m.group(1) for m in re.finditer(r'\{"S": f"([A-Z]+)#\{self\.scope\}"\}', scheme)}
    )
    assert {"FREEZE", "LOCK", "REQUEST", "QUEUE", "HISTORY", "NOTICE", "TAG"} <= prefixes
    for prefix in prefixes | {"NOTICE"}:
        assert readable(f"{prefix}#hello-world-ecr-ecs-fargate/hello-world-ecr-ecs-fargate") == (
            prefix == "FREEZE"
        ), prefix


def test_ci_reads_the_bots_targets_parameter_and_no_other(ci: dict[str, Any]) -> None:
    """The notice's buttons per target (release.yml's notify step, --config-parameter): CI's
    role may GetParameter the bot's deploybot.toml (bot.yml's BotConfig) and nothing more:
    no other parameter, no GetParameters/ByPath/History, no write, no KMS."""
    (statement,) = [s for s in role_statements(ci, "ReleaseRole") if s["Sid"] == "ReadBotConfig"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "ssm:GetParameter")
    assert "Condition" not in statement
    granted = role_actions(role_statements(ci, "ReleaseRole"))
    assert {a for a in granted if not a.startswith(("ecr:", "dynamodb:"))} == {"ssm:GetParameter"}
    bot = load_template("bot")
    name = render(resource(bot, "BotConfig")["Name"])
    parameters = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                  "ServiceStackName": STACK}  # fmt: skip
    (arn,) = granted["ssm:GetParameter"]
    assert substitute(arn, parameters) == (
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter" + substitute(name, parameters)
    )
    assert "*" not in arn
    # The step names that very parameter.
    workflow = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert '--config-parameter "/$STACK_NAME-bot/deploybot.toml"' in workflow
    assert substitute(name, parameters) == f"/{STACK}-bot/deploybot.toml"


def _policy_document(value: Any) -> dict[str, Any]:
    # boto3 decodes IAM's URL-encoded JSON; moto (5.x) hands inline policies back as Python
    # reprs, which literal_eval reads as well.
    if isinstance(value, dict):
        return value
    try:
        return dict(json.loads(value))
    except json.JSONDecodeError:
        return dict(ast.literal_eval(value))


@pytest.mark.filterwarnings("ignore::UserWarning:moto.cloudformation.parsing")
def test_make_ci_infra_creates_the_role_as_evaluated(moto_url: str) -> None:
    """`make ci-infra` through moto's CloudFormation: the role IAM holds, intrinsics resolved."""
    lines: list[str] = []
    assert main(["ci"], out=lines.append, delay=0.05) == 2
    assert "GitHubRepository=" in lines[-1]
    argv = ["ci", f"GitHubRepository={REPO}", "CreateOidcProvider=false"]
    assert main(argv, out=lines.append, delay=0.05) == 0, lines
    assert f"{STACK}-ci: created" in lines

    iam = boto3.client("iam", endpoint_url=moto_url, region_name=REGION)
    (role,) = [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(f"{STACK}-ci-")]
    trust = role["AssumeRolePolicyDocument"]
    assert trust_allows(trust, ASSUME, PROVIDER, _claims(RELEASE_RUN))
    for sub in REFUSED.values():
        assert not trust_allows(trust, ASSUME, PROVIDER, _claims(sub)), sub

    (name,) = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    policy = _policy_document(
        iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
    )
    granted = role_actions(policy["Statement"])
    assert granted.pop("ecr:GetAuthorizationToken") == ["*"]
    assert granted.pop("dynamodb:GetItem") == [
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-deployments"
    ]
    assert granted.pop("ssm:GetParameter") == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{STACK}-bot/deploybot.toml"
    ]
    repositories = [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{STACK}"]
    repositories.append(repositories[0] + "-bot")
    assert granted == {action: repositories for action in ECR_PUSH}
