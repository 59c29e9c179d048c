"""Promotion across AWS accounts (#30): can the target pull the digest, before anything changes?

A promotion deploys the source's digest, by digest, to the repository the target's tasks pull
from (``Target.repository``; the plan pins the image the service runs now to the new digest).
Across accounts that is one of two set-ups (docs/OPERATIONS.md, "Targets in other accounts"):

- ECR replication: the target account has a repository of its own, into which the source
  account's registry replicates. The digest is resolved there; not there (replication not set
  up, or not done yet): refused.
- Cross-account pull: the target's ``repository`` is the source account's repository URI. The
  digest must be in it, and its repository policy (GetRepositoryPolicy) must let the target
  account pull: ``ecr:BatchGetImage`` and ``ecr:GetDownloadUrlForLayer`` ("Allow another
  account": https://docs.aws.amazon.com/AmazonECR/latest/userguide/repository-policy-examples.html;
  a task's pull needs those two on the repository, beside ecr:GetAuthorizationToken in the
  execution role: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/
  task_execution_IAM_role.html). Not allowed: refused.

A refusal names the target, the repository, the account and what to set up; nothing is changed.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from bot.deploy.aws import AwsClient, aws_errors
from bot.deploy.records import short_digest
from bot.errors import DeployRefused
from bot.target import Target

# What a task needs on the repository to pull an image (see above).
PULL_ACTIONS = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
DOCS = "docs/OPERATIONS.md, Targets in other accounts"


class ImageNotPullable(DeployRefused):
    """The target's account cannot pull the digest a promotion would deploy (exit 2)."""


def _listed(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _names_account(principal: Any, account: str) -> bool:
    """Whether a statement's Principal covers principals of ``account`` (the account, its root,
    any of its roles: whichever role pulls, the execution role, is in that account)."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for value in _listed(principal.get("AWS")):
        if value in ("*", account) or value.startswith(f"arn:aws:iam::{account}:"):
            return True
        if value.startswith(("arn:aws-cn:iam::", "arn:aws-us-gov:iam::")) and (
            value.split(":")[4] == account
        ):
            return True
    return False


def _covers(patterns: list[str], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def lets_pull(policy_text: str | None, account: str) -> bool:
    """Whether a repository policy lets ``account`` pull: each of PULL_ACTIONS allowed to a
    principal of the account and none denied. A statement with a Condition (an organization's
    ``aws:PrincipalOrgID``…) counts as it reads: its condition cannot be told from here, and
    ECS says so at the pull if it does not hold. NotAction/NotPrincipal statements are not read
    as allowing anything."""
    if not policy_text:
        return False
    try:
        policy = json.loads(policy_text)
    except ValueError:
        return False
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    allowed: set[str] = set()
    for statement in statements if isinstance(statements, list) else []:
        if not isinstance(statement, dict) or "Principal" not in statement:
            continue
        if not _names_account(statement["Principal"], account):
            continue
        actions = _listed(statement.get("Action"))
        matched = {a for a in PULL_ACTIONS if _covers(actions, a)}
        if statement.get("Effect") == "Deny" and matched:
            return False
        if statement.get("Effect") == "Allow":
            allowed |= matched
    return allowed >= set(PULL_ACTIONS)


def _account_of_caller(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4].isdigit() else None


def require_pullable(aws: AwsClient, target: Target, source: Target, tag: str, digest: str) -> None:
    """Refuse (ImageNotPullable) a promotion of ``digest`` from ``source`` that ``target``
    (``aws`` is its engine's client) could not pull. Targets in the bot's own account reading
    their own repository are the engine's usual check (ImageMissing)."""
    if not digest or (target.role_arn is None and aws.registry is None):
        return
    image = f"{tag} ({short_digest(digest)})"
    account = target.account or aws.account
    with aws_errors(f"checking that {target.name} can pull {image}"):
        found = aws.image_by_digest(digest)
        if aws.registry is None or aws.registry == account:
            if found is None:
                raise ImageNotPullable(
                    f"Not promoted: {image} is not in {target.name}'s ECR repository "
                    f"{aws.repository} (account {account or 'of the bot'}, {aws.region}), the "
                    f"one its tasks pull from. ECR replication from {source.name}'s registry "
                    "has not copied it there yet, or is not set up for this repository "
                    f"({DOCS}). Nothing was changed; promote again once it is there."
                )
            return
        where = f"{aws.registry}'s repository {aws.repository}"
        if found is None:
            raise ImageNotPullable(
                f"Not promoted: {image} is no longer in {where}, which {target.name} pulls "
                "from. Nothing was changed."
            )
        account = account or _account_of_caller(aws.caller_arn())
        if account is None:
            return  # the bot's own account, which AWS would not name: nothing to hold it to
        policy = aws.repository_policy()
    if not lets_pull(policy, account):
        raise ImageNotPullable(
            f"Not promoted: {target.name} (account {account}) cannot pull {image} from "
            f"{where}: its repository policy does not allow account {account} "
            f"{' and '.join(PULL_ACTIONS)}. Allow it (the repository's policy, or ECR "
            f"replication into {target.name}'s account: {DOCS}). Nothing was changed."
        )
