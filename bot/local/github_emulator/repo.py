"""What the GitHub stand-in keeps per repository: commits, deployments, deployment statuses.

Each method answers one REST endpoint as GitHub shapes it, from the REST reference
(https://docs.github.com/en/rest/commits/commits#compare-two-commits,
https://docs.github.com/en/rest/deployments/deployments,
https://docs.github.com/en/rest/deployments/statuses). Errors are ``ApiError`` carrying
GitHub's status and ``message``. Callers hold the emulator's lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

JSON = dict[str, Any]
DOCS = "https://docs.github.com/rest"

# Compare: "When calling this API without any paging parameters (per_page or page), the returned
# list is limited to 250 commits, and the last commit in the list is the most recent of the
# entire comparison." With paging, per_page is at most 100 and defaults to 30 (REST reference,
# "Compare two commits"; changelog 2021-03-22 "Compare REST API now supports pagination").
UNPAGED_COMMIT_LIMIT = 250
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30
# Deployment statuses: "The state of the status." (REST reference, "Create a deployment status").
STATUS_STATES = frozenset(
    {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
)
# "A short description of the status. The maximum description length is 140 characters."
MAX_STATUS_DESCRIPTION = 140
_HEX = re.compile(r"[0-9a-f]{4,40}")


class ApiError(Exception):
    """A GitHub error answer: ``status`` and ``{"message": …, "documentation_url": …}``."""

    def __init__(self, status: int, message: str, doc: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"message": message, "documentation_url": f"{DOCS}{doc}", **extra}


@dataclass(frozen=True)
class Commit:
    """One commit of the seeded history; ``parent`` is None for a root commit."""

    sha: str
    message: str
    author_name: str
    author_email: str
    author_login: str | None  # None: the e-mail belongs to no GitHub account ("author": null)
    parent: str | None
    at: datetime

    @property
    def title(self) -> str:
        return self.message.split("\n", 1)[0]


@dataclass
class Repository:
    """One repository: a commit tree with named branches, deployments and their statuses."""

    full_name: str
    private: bool
    web_url: str
    api_url: str
    commits: dict[str, Commit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # shas in creation order
    branches: dict[str, str] = field(default_factory=dict)  # name -> tip sha
    checks: dict[str, dict[str, str]] = field(default_factory=dict)  # sha -> context -> state
    deployments: list[JSON] = field(default_factory=list)  # oldest first
    statuses: dict[int, list[JSON]] = field(default_factory=dict)  # deployment id -> oldest first
    default_branch: str = "main"

    # -- seeding ----------------------------------------------------------------------------

    def add_commit(
        self,
        message: str,
        author_name: str,
        author_email: str,
        author_login: str | None,
        parent: str | None,
        at: datetime,
        sha: str | None = None,
    ) -> Commit:
        """A new commit; ``sha`` (40 hex digits) names it, else one is made from its content."""
        if sha is None:
            seed = f"{self.full_name}\n{parent}\n{message}\n{len(self.order)}"
            sha = hashlib.sha1(seed.encode()).hexdigest()
        elif not re.fullmatch(r"[0-9a-f]{40}", sha) or sha in self.commits:
            raise ValueError(f"{sha!r} is not a new 40-digit lowercase sha")
        commit = Commit(sha, message, author_name, author_email, author_login, parent, at)
        self.commits[sha] = commit
        self.order.append(sha)
        return commit

    def resolve(self, ref: str) -> str | None:
        """A full sha for a branch name, a full sha, or an unambiguous prefix of 4+ digits."""
        if ref in self.branches:
            return self.branches[ref]
        ref = ref.lower()
        if not _HEX.fullmatch(ref):
            return None
        found = [sha for sha in self.order if sha.startswith(ref)]
        return found[0] if len(found) == 1 else None

    def ancestry(self, sha: str) -> list[str]:
        """``sha`` and its ancestors, newest first."""
        chain: list[str] = []
        current: str | None = sha
        while current is not None:
            chain.append(current)
            current = self.commits[current].parent
        return chain

    # -- shapes -----------------------------------------------------------------------------

    def _user(self, login: str | None) -> JSON | None:
        if login is None:
            return None
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:7], 16)
        return {
            "login": login,
            "id": uid,
            "type": "User",
            "html_url": f"{self.web_url}/{login}",
            "url": f"{self.api_url}/users/{login}",
        }

    def commit_json(self, sha: str) -> JSON:
        c = self.commits[sha]
        person = {"name": c.author_name, "email": c.author_email, "date": _iso(c.at)}
        repo_api = f"{self.api_url}/repos/{self.full_name}"
        return {
            "sha": sha,
            "node_id": f"C_{sha[:16]}",
            "commit": {
                "author": person,
                "committer": person,
                "message": c.message,
                "tree": {"sha": hashlib.sha1(sha.encode()).hexdigest(), "url": ""},
                "url": f"{repo_api}/git/commits/{sha}",
                "comment_count": 0,
            },
            "url": f"{repo_api}/commits/{sha}",
            "html_url": f"{self.web_url}/{self.full_name}/commit/{sha}",
            "author": self._user(c.author_login),
            "committer": self._user(c.author_login),
            "parents": (
                [{"sha": c.parent, "url": f"{repo_api}/commits/{c.parent}"}] if c.parent else []
            ),
        }

    # -- compare ----------------------------------------------------------------------------

    def compare(self, basehead: str, query: dict[str, str]) -> tuple[JSON, dict[str, str]]:
        """``GET /repos/{owner}/{repo}/compare/{base}...{head}``: the answer and its headers."""
        doc = "/commits/commits#compare-two-commits"
        base_ref, sep, head_ref = basehead.partition("...")
        base = self.resolve(base_ref) if sep else None
        head = self.resolve(head_ref) if sep else None
        if base is None or head is None:
            raise ApiError(404, "Not Found", doc)
        base_line, head_line = self.ancestry(base), self.ancestry(head)
        in_base, in_head = set(base_line), set(head_line)
        merge_base = next((sha for sha in head_line if sha in in_base), None)
        if merge_base is None:  # unrelated histories: GitHub answers 404 for those
            raise ApiError(404, f"No common ancestor between {base_ref} and {head_ref}.", doc)
        ahead = [sha for sha in reversed(head_line) if sha not in in_base]  # oldest first
        behind_by = sum(1 for sha in base_line if sha not in in_head)
        if base == head:
            status = "identical"
        elif behind_by == 0:
            status = "ahead"
        elif not ahead:
            status = "behind"
        else:
            status = "diverged"
        headers: dict[str, str] = {}
        paged = "page" in query or "per_page" in query
        if paged:
            per_page = _bounded(query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
            page = _bounded(query.get("page"), 1, 1, 1_000_000)
            shown = ahead[(page - 1) * per_page : page * per_page]
            url = f"{self.api_url}/repos/{self.full_name}/compare/{basehead}"
            headers["Link"] = _link_header(url, page, per_page, len(ahead))
        elif len(ahead) > UNPAGED_COMMIT_LIMIT:
            shown = [*ahead[: UNPAGED_COMMIT_LIMIT - 1], ahead[-1]]
        else:
            shown = ahead
        repo_api = f"{self.api_url}/repos/{self.full_name}"
        body: JSON = {
            "url": f"{repo_api}/compare/{basehead}",
            "html_url": f"{self.web_url}/{self.full_name}/compare/{basehead}",
            "permalink_url": f"{self.web_url}/{self.full_name}/compare/{base}...{head}",
            "diff_url": f"{self.web_url}/{self.full_name}/compare/{basehead}.diff",
            "patch_url": f"{self.web_url}/{self.full_name}/compare/{basehead}.patch",
            "base_commit": self.commit_json(base),
            "merge_base_commit": self.commit_json(merge_base),
            "status": status,
            "ahead_by": len(ahead),
            "behind_by": behind_by,
            "total_commits": len(ahead),
            "commits": [self.commit_json(sha) for sha in shown],
        }
        # "When using paging, the list of changed files is only returned with page 1".
        if not paged or query.get("page", "1") == "1":
            body["files"] = []
        return body, headers

    # -- deployments ------------------------------------------------------------------------

    def _deployment(self, deployment_id: int) -> JSON:
        for d in self.deployments:
            if d["id"] == deployment_id:
                return d
        raise ApiError(404, "Not Found", "/deployments/deployments#get-a-deployment")

    def create_deployment(self, body: Any, new_id: int, creator: str, now: datetime) -> JSON:
        """``POST /repos/{owner}/{repo}/deployments``; raises ApiError(202) for an auto-merge."""
        doc = "/deployments/deployments#create-a-deployment"
        if not isinstance(body, dict):
            raise ApiError(400, "Problems parsing JSON", doc)
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise ApiError(422, 'Invalid request.\n\n"ref" wasn\'t supplied.', doc)
        sha = self.resolve(ref)
        if sha is None:
            raise ApiError(422, f"No ref found for: {ref}", doc)
        # "The auto_merge parameter is used to ensure that the requested ref is not behind the
        # repository's default branch. If the ref is behind the default branch for the
        # repository, we will attempt to merge it for you." Default: true. A merge made
        # instead of a deployment answers 202 ("Merged branch response"): no deployment.
        tip = self.branches.get(self.default_branch)
        if body.get("auto_merge", True) and tip and tip not in self.ancestry(sha):
            raise ApiError(202, f"Auto-merged {self.default_branch} into {ref} on deployment.", doc)
        # "By default, commit statuses for every submitted context must be in a success
        # state. The required_contexts parameter allows you to specify a subset of contexts
        # that must be success"; an empty list bypasses the check. Otherwise 409 Conflict.
        checks = self.checks.get(sha, {})
        required = body.get("required_contexts")
        wanted = list(checks) if required is None else list(required)
        failing = [ctx for ctx in wanted if checks.get(ctx) != "success"]
        if failing:
            raise ApiError(
                409,
                f"Conflict: Commit status checks failed for {ref}.",
                doc,
                errors=[{"contexts": failing, "resource": "Deployment", "code": "invalid"}],
            )
        payload = body.get("payload", {})
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except json.JSONDecodeError as exc:
                raise ApiError(422, "Validation Failed: payload is not JSON", doc) from exc
        environment = str(body.get("environment") or "production")
        repo_api = f"{self.api_url}/repos/{self.full_name}"
        deployment: JSON = {
            "url": f"{repo_api}/deployments/{new_id}",
            "id": new_id,
            "node_id": f"DE_{new_id}",
            "sha": sha,
            "ref": ref,
            "task": str(body.get("task") or "deploy"),
            "payload": payload,
            "original_environment": environment,
            "environment": environment,
            "description": body.get("description"),
            "creator": self._user(creator),
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "statuses_url": f"{repo_api}/deployments/{new_id}/statuses",
            "repository_url": repo_api,
            "transient_environment": bool(body.get("transient_environment", False)),
            # "production_environment … Default: true when environment is production".
            "production_environment": bool(
                body.get("production_environment", environment == "production")
            ),
        }
        self.deployments.append(deployment)
        self.statuses[new_id] = []
        return deployment

    def list_deployments(self, query: dict[str, str]) -> tuple[list[JSON], dict[str, str]]:
        """``GET /repos/{owner}/{repo}/deployments``: newest first, filtered, paged."""
        found = [
            d
            for d in reversed(self.deployments)
            if all(
                query.get(key) in (None, d[key]) for key in ("sha", "ref", "task", "environment")
            )
        ]
        return _page(found, query, f"{self.api_url}/repos/{self.full_name}/deployments")

    def get_deployment(self, deployment_id: int) -> JSON:
        return self._deployment(deployment_id)

    def create_status(
        self, deployment_id: int, body: Any, next_id: Callable[[], int], creator: str, now: datetime
    ) -> JSON:
        """``POST /repos/{owner}/{repo}/deployments/{id}/statuses``."""
        doc = "/deployments/statuses#create-a-deployment-status"
        deployment = self._deployment(deployment_id)
        if not isinstance(body, dict):
            raise ApiError(400, "Problems parsing JSON", doc)
        state = body.get("state")
        if state not in STATUS_STATES:
            raise ApiError(
                422,
                "Validation Failed",
                doc,
                errors=[{"resource": "DeploymentStatus", "code": "invalid", "field": "state"}],
            )
        description = str(body.get("description") or "")
        if len(description) > MAX_STATUS_DESCRIPTION:
            raise ApiError(
                422,
                "Validation Failed",
                doc,
                errors=[{"resource": "DeploymentStatus", "code": "custom", "field": "description"}],
            )
        if body.get("environment"):
            deployment["environment"] = str(body["environment"])
        log_url = str(body.get("log_url") or body.get("target_url") or "")
        status = self._status(
            deployment, next_id(), state, description, log_url, body, creator, now
        )
        # auto_inactive: "Adds a new inactive status to all prior non-transient,
        # non-production environment deployments with the same repository and environment
        # name as the created status's deployment. An inactive status is only added to
        # deployments that had a success state. Default: true". Production deployments are
        # left as they are: marking the replaced one inactive is the deployer's job there.
        if state == "success" and body.get("auto_inactive", True):
            for other in self.deployments:
                history = self.statuses[other["id"]]
                if (
                    other is not deployment
                    and other["environment"] == deployment["environment"]
                    and not other["transient_environment"]
                    and not other["production_environment"]
                    and history
                    and history[-1]["state"] == "success"
                ):
                    self._status(other, next_id(), "inactive", "", "", {}, creator, now)
        return status

    def _status(
        self,
        deployment: JSON,
        new_id: int,
        state: str,
        description: str,
        log_url: str,
        body: JSON,
        creator: str,
        now: datetime,
    ) -> JSON:
        repo_api = f"{self.api_url}/repos/{self.full_name}"
        status: JSON = {
            "url": f"{repo_api}/deployments/{deployment['id']}/statuses/{new_id}",
            "id": new_id,
            "node_id": f"DES_{new_id}",
            "state": state,
            "creator": self._user(creator),
            "description": description,
            "environment": deployment["environment"],
            "target_url": log_url,
            "log_url": log_url,
            "environment_url": str(body.get("environment_url") or ""),
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "deployment_url": deployment["url"],
            "repository_url": repo_api,
        }
        self.statuses[deployment["id"]].append(status)
        deployment["updated_at"] = _iso(now)
        return status

    def list_statuses(
        self, deployment_id: int, query: dict[str, str]
    ) -> tuple[list[JSON], dict[str, str]]:
        """``GET /repos/{owner}/{repo}/deployments/{id}/statuses``: newest first, paged."""
        self._deployment(deployment_id)
        url = f"{self.api_url}/repos/{self.full_name}/deployments/{deployment_id}/statuses"
        return _page(list(reversed(self.statuses[deployment_id])), query, url)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _bounded(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = default
    return max(low, min(high, value))


def _link_header(url: str, page: int, per_page: int, total: int) -> str:
    """RFC 8288 ``Link`` with first/prev/next/last, the way GitHub pages its lists."""
    last = max(1, math.ceil(total / per_page))
    rels = {"first": 1, "prev": page - 1, "next": page + 1, "last": last}
    links = [
        f'<{url}?{urlencode({"per_page": per_page, "page": number})}>; rel="{rel}"'
        for rel, number in rels.items()
        if 1 <= number <= last
        and not (rel == "first" and page == 1)
        and not (rel == "last" and page == last)
    ]
    return ", ".join(links)


def _page(items: list[JSON], query: dict[str, str], url: str) -> tuple[list[JSON], dict[str, str]]:
    per_page = _bounded(query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    page = _bounded(query.get("page"), 1, 1, 1_000_000)
    shown = items[(page - 1) * per_page : page * per_page]
    link = _link_header(url, page, per_page, len(items))
    return shown, ({"Link": link} if link else {})


def commit_time(start: datetime, index: int) -> datetime:
    """Seeded commits are a minute apart, so their order shows in their dates."""
    return start + timedelta(minutes=index)
