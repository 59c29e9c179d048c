"""GitHub, as deploybot needs it: compare two commits, record deployments and their statuses.

Nothing here may fail a deploy. Every call has a short timeout and no retry, and every failure
(GitHub unreachable or slow, 401, 403, 404, rate limits, 5xx, an answer that cannot be read)
comes back as an ``Unavailable`` value whose ``reason`` a person can read, never as an
exception. Callers check ``isinstance(result, Unavailable)``.

REST reference: https://docs.github.com/en/rest/commits/commits#compare-two-commits,
https://docs.github.com/en/rest/deployments/deployments,
https://docs.github.com/en/rest/deployments/statuses.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.client import HTTPException, HTTPMessage
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode, urlsplit

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger("deploybot.github")

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_WEB_URL = "https://github.com"
TIMEOUT_SECONDS = 5.0
SHOWN_COMMITS = 10
API_VERSION = "2022-11-28"  # the X-GitHub-Api-Version the shapes below were read from
# Compare pages hold at most 100 commits ("per_page … (max 100)", Compare two commits).
_PER_PAGE = 100
# The most pages of a compare read for lead time (GitHub.shipped): 1,000 commits a deployment.
SHIPPED_PAGES = 10
# "The maximum description length is 140 characters." (Create a deployment status)
MAX_STATUS_DESCRIPTION = 140
STATUS_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")

UnavailableKind = Literal[
    "not_configured",  # GITHUB_REPOSITORY unset or not owner/name
    "no_token",  # GITHUB_TOKEN unset: links only
    "bad_input",  # what we were asked to send is not valid (a sha, a state)
    "unreachable",  # no connection, or it dropped
    "timeout",  # no answer in time
    "unauthorized",  # 401: the token is wrong or expired
    "forbidden",  # 403 that is not a rate limit
    "not_found",  # 404: repository, commit or deployment unknown, or hidden from the token
    "rate_limited",  # 403/429 with x-ratelimit-remaining: 0, retry-after, or plain 429
    "refused",  # 202 (auto-merge instead of a deployment), 409, 422
    "server_error",  # 5xx
    "bad_answer",  # an answer that is not what GitHub documents
]


@dataclass(frozen=True)
class Unavailable:
    """GitHub could not help this time; ``reason`` says why, for a person."""

    kind: UnavailableKind
    reason: str
    status: int | None = None
    retry_at: datetime | None = None  # rate limits: when GitHub will answer again

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class CommitInfo:
    """One commit as a deploy summary shows it."""

    sha: str
    title: str  # the first line of the message
    author_name: str  # the git author's name
    author_login: str | None  # the GitHub account, when GitHub knows the author's e-mail
    url: str

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    @property
    def author(self) -> str:
        """The GitHub login when there is one, else the git author's name."""
        return self.author_login or self.author_name


@dataclass(frozen=True)
class Comparison:
    """``base...head``: the commits in ``head`` that ``base`` lacks."""

    base: str
    head: str
    status: str  # "ahead", "behind", "identical" or "diverged"
    total_commits: int
    commits: tuple[CommitInfo, ...]  # the newest SHOWN_COMMITS, newest first
    html_url: str

    @property
    def more(self) -> int:
        """How many commits are counted but not in ``commits``."""
        return max(0, self.total_commits - len(self.commits))


@dataclass(frozen=True)
class GitHubDeployment:
    id: int
    sha: str
    ref: str
    environment: str
    description: str
    created_at: str
    url: str
    # What the creator attached: deploybot puts its own deployment id here, so any process
    # can find the GitHub deployment of a record (GitHub returns it as given, an object).
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GitHubDeploymentStatus:
    id: int
    deployment_id: int
    state: str
    description: str
    log_url: str
    environment_url: str


class _CrossOrigin(Exception):
    """A redirect named another origin than GITHUB_API_URL's: not followed."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(location)
        self.status = status
        self.location = location


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: what "origin" means."""
    split = urlsplit(url)
    scheme = split.scheme.lower()
    try:
        port = split.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (split.hostname or "").lower(), port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow GitHub's redirects within GITHUB_API_URL's origin only.

    GitHub asks clients to follow redirects ("Follow any redirects that the API sends you",
    https://docs.github.com/en/rest/guides/best-practices-for-using-the-rest-api; a renamed
    repository answers 301 or 307:
    https://developer.github.com/changes/2015-04-17-preview-repository-redirects),
    but urllib copies every header, ``Authorization`` included, onto the redirected request
    whatever host it names (``HTTPRedirectHandler.redirect_request``), so a proxy or GitHub
    Enterprise host that redirects elsewhere would hand GITHUB_TOKEN to that host. requests
    strips the header across hosts (``Session.rebuild_auth``); we refuse the hop instead: the
    other origin gets neither the token nor the request, and the reason names it.
    """

    def __init__(self, api_url: str) -> None:
        self._origin = _origin(api_url)

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != self._origin:
            fp.close()
            raise _CrossOrigin(code, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Failed(Exception):
    def __init__(self, unavailable: Unavailable) -> None:
        super().__init__(unavailable.reason)
        self.unavailable = unavailable


def web_url_for(api_url: str) -> str:
    """The web address matching an API base: github.com, or a GitHub Enterprise host.

    GitHub Enterprise Server serves its REST API at ``https://HOST/api/v3``; anything else
    (a stand-in, a proxy) links to github.com.
    """
    split = urlsplit(api_url.rstrip("/"))
    if split.path.endswith("/api/v3") and split.hostname:
        return f"{split.scheme}://{split.netloc}{split.path.removesuffix('/api/v3')}"
    return DEFAULT_WEB_URL


class GitHubClient:
    """One repository's GitHub, over the REST API with the standard library's HTTP client.

    Without a repository nothing is linked; without a token links are built but GitHub is
    never called (the issue's contract: a token brings the commit list and deployments).
    """

    def __init__(
        self,
        repository: str | None,
        token: str | None = None,
        api_url: str = DEFAULT_API_URL,
        *,
        timeout: float = TIMEOUT_SECONDS,
        web_url: str | None = None,
        user_agent: str = "deploybot",
    ) -> None:
        self.repository = (repository or "").strip()
        self._token = token or None
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.web_url = (web_url or web_url_for(self.api_url)).rstrip("/")
        self.timeout = timeout
        self.user_agent = user_agent
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self.api_url))

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = TIMEOUT_SECONDS) -> GitHubClient:
        return cls(
            settings.github_repository,
            settings.secret("github_token"),
            settings.github_api_url,
            timeout=timeout,
        )

    # -- what is configured ---------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """GITHUB_REPOSITORY is set and is ``owner/name``."""
        return bool(_REPOSITORY.fullmatch(self.repository))

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def _not_ready(self) -> Unavailable | None:
        if not self.repository:
            return Unavailable("not_configured", "GITHUB_REPOSITORY is not set")
        if not self.configured:
            return Unavailable(
                "not_configured",
                f"GITHUB_REPOSITORY `{_shown(self.repository)}` is not owner/name",
            )
        if self._token is None:
            return Unavailable("no_token", "GITHUB_TOKEN is not set")
        return None

    # -- links ----------------------------------------------------------------------------

    def compare_url(self, base: str, head: str) -> str | None:
        """``https://github.com/{owner}/{repo}/compare/{base}...{head}``; None if no repository."""
        if not self.configured or not (_SHA.fullmatch(base) and _SHA.fullmatch(head)):
            return None
        return f"{self.web_url}/{self.repository}/compare/{base}...{head}"

    # -- compare --------------------------------------------------------------------------

    def compare(self, base: str, head: str) -> Comparison | Unavailable:
        """The commits ``head`` has that ``base`` lacks: count, the newest ten, the link."""
        if (trouble := self._not_ready()) is not None:
            return trouble
        for sha in (base, head):
            if not _SHA.fullmatch(sha):
                return Unavailable("bad_input", f"`{_shown(sha)}` is not a commit sha")
        path = f"/repos/{self.repository}/compare/{quote(base)}...{quote(head)}"
        doing = f"comparing {base[:7]}...{head[:7]}"
        try:
            # Pages of 100, oldest first ("commits are returned in chronological order"): the
            # newest ten are at the end of the last page, and maybe the one before it.
            first = self._json("GET", path, doing, _page(1))
            total = _int(first, "total_commits")
            commits = _list(first, "commits")
            last = math.ceil(total / _PER_PAGE)
            if total > len(commits) and last > 1:
                tail = _list(self._json("GET", path, doing, _page(last)), "commits")
                if len(tail) < SHOWN_COMMITS:
                    before = (
                        _list(self._json("GET", path, doing, _page(last - 1)), "commits")
                        if last > 2
                        else commits
                    )
                    tail = before + tail
                commits = tail
            newest = [_commit(c) for c in reversed(commits[-SHOWN_COMMITS:])] if commits else []
            html_url = first.get("html_url")
            return Comparison(
                base=base,
                head=head,
                status=str(first.get("status", "")),
                total_commits=total,
                commits=tuple(newest),
                html_url=(
                    html_url
                    if isinstance(html_url, str) and html_url.startswith(("http://", "https://"))
                    else self.compare_url(base, head) or ""
                ),
            )
        except _Failed as failed:
            return failed.unavailable
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._bad_answer(doing, exc)

    def shipped(
        self, base: str, head: str, max_pages: int = SHIPPED_PAGES
    ) -> tuple[tuple[str, datetime], ...] | Unavailable:
        """Every commit ``head`` has that ``base`` lacks, with its committer's date (full sha,
        time), oldest first: what a deployment from ``base`` to ``head`` shipped, for lead time
        (bot/deploy/stats.py). The compare, paged 100 at a time (its commits "in chronological
        order"; GitHub REST "Compare two commits": pagination beyond 250 commits), at most
        ``max_pages`` pages: a longer range keeps its oldest commits, which set lead time."""
        if (trouble := self._not_ready()) is not None:
            return trouble
        for sha in (base, head):
            if not _SHA.fullmatch(sha):
                return Unavailable("bad_input", f"`{_shown(sha)}` is not a commit sha")
        path = f"/repos/{self.repository}/compare/{quote(base)}...{quote(head)}"
        doing = f"reading the commits of {base[:7]}...{head[:7]}"
        found: list[tuple[str, datetime]] = []
        try:
            first = self._json("GET", path, doing, _page(1))
            total = _int(first, "total_commits")
            pages = [_list(first, "commits")]
            for number in range(2, min(max_pages, math.ceil(total / _PER_PAGE)) + 1):
                pages.append(_list(self._json("GET", path, doing, _page(number)), "commits"))
            for commits in pages:
                for raw in commits:
                    detail = raw["commit"]
                    when = (detail.get("committer") or detail.get("author") or {}).get("date")
                    found.append((str(raw["sha"]), _iso(str(when))))
        except _Failed as failed:
            return failed.unavailable
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._bad_answer(doing, exc)
        return tuple(found)

    # -- deployments ----------------------------------------------------------------------

    def create_deployment(
        self,
        sha: str,
        environment: str,
        description: str = "",
        payload: Mapping[str, Any] | None = None,
    ) -> GitHubDeployment | Unavailable:
        """A GitHub deployment of commit ``sha`` to ``environment`` (the target's name)."""
        if (trouble := self._not_ready()) is not None:
            return trouble
        if not _SHA.fullmatch(sha):
            return Unavailable("bad_input", f"`{_shown(sha)}` is not a commit sha")
        body = {
            "ref": sha,
            "environment": environment,
            "description": description,
            "payload": dict(payload or {}),
            # The image is already built from this commit: GitHub must not merge the default
            # branch into an older sha (a rollback) instead of recording it ("auto_merge …
            # Default: true"), nor re-check commit statuses ("required_contexts … To bypass
            # checking entirely, pass an empty array.").
            "auto_merge": False,
            "required_contexts": [],
        }
        doing = f"recording the deployment of {sha[:7]} to {environment}"
        try:
            answer = self._json("POST", f"/repos/{self.repository}/deployments", doing, body=body)
            return _deployment(answer)
        except _Failed as failed:
            return failed.unavailable
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._bad_answer(doing, exc)

    def set_status(
        self,
        deployment_id: int,
        state: str,
        *,
        log_url: str | None = None,
        environment_url: str | None = None,
        description: str | None = None,
        auto_inactive: bool | None = None,
    ) -> GitHubDeploymentStatus | Unavailable:
        """A new status of a GitHub deployment: in_progress, success, failure, inactive …

        ``auto_inactive`` (GitHub's default: true) makes earlier successful deployments of the
        same environment inactive, but only for non-production environments; a production
        deployment that was replaced needs its own ``inactive`` (see ``deactivate_previous``).
        """
        if (trouble := self._not_ready()) is not None:
            return trouble
        if state not in STATUS_STATES:
            return Unavailable(
                "bad_input",
                f"`{_shown(state)}` is not a deployment state ({', '.join(STATUS_STATES)})",
            )
        body: dict[str, Any] = {"state": state}
        if description:
            body["description"] = _clip(description, MAX_STATUS_DESCRIPTION)
        if log_url:
            body["log_url"] = log_url
        if environment_url:
            body["environment_url"] = environment_url
        if auto_inactive is not None:
            body["auto_inactive"] = auto_inactive
        doing = f"setting GitHub deployment {deployment_id} to {state}"
        path = f"/repos/{self.repository}/deployments/{int(deployment_id)}/statuses"
        try:
            return _status(self._json("POST", path, doing, body=body), deployment_id)
        except _Failed as failed:
            return failed.unavailable
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._bad_answer(doing, exc)

    def deployments(
        self, environment: str | None = None, sha: str | None = None, limit: int = 10
    ) -> tuple[GitHubDeployment, ...] | Unavailable:
        """The newest deployments (of ``environment``, of ``sha``), newest first."""
        if (trouble := self._not_ready()) is not None:
            return trouble
        query: dict[str, Any] = {"per_page": max(1, min(limit, 100))}
        if environment:
            query["environment"] = environment
        if sha:
            query["sha"] = sha
        doing = "listing GitHub deployments"
        try:
            answer = self._json("GET", f"/repos/{self.repository}/deployments", doing, query)
            if not isinstance(answer, list):
                raise TypeError("the list of deployments is not a list")
            return tuple(_deployment(d) for d in answer)
        except _Failed as failed:
            return failed.unavailable
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._bad_answer(doing, exc)

    def statuses(
        self, deployment_id: int, limit: int = 10
    ) -> tuple[GitHubDeploymentStatus, ...] | Unavailable:
        """A deployment's newest statuses, newest first."""
        if (trouble := self._not_ready()) is not None:
            return trouble
        doing = f"listing the statuses of GitHub deployment {deployment_id}"
        path = f"/repos/{self.repository}/deployments/{int(deployment_id)}/statuses"
        try:
            answer = self._json("GET", path, doing, {"per_page": max(1, min(limit, 100))})
            if not isinstance(answer, list):
                raise TypeError("the list of statuses is not a list")
            return tuple(_status(s, deployment_id) for s in answer)
        except _Failed as failed:
            return failed.unavailable
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._bad_answer(doing, exc)

    def deactivate_previous(
        self, environment: str, keep_id: int, limit: int = 10
    ) -> tuple[int, ...] | Unavailable:
        """Mark ``inactive`` every recent deployment of ``environment`` but ``keep_id`` whose
        latest status is ``success``: what GitHub's auto_inactive leaves undone for production.
        Returns the ids marked."""
        found = self.deployments(environment=environment, limit=limit)
        if isinstance(found, Unavailable):
            return found
        marked: list[int] = []
        for deployment in found:
            if deployment.id == keep_id:
                continue
            latest = self.statuses(deployment.id, limit=1)
            if isinstance(latest, Unavailable):
                return latest
            if latest and latest[0].state == "success":
                done = self.set_status(
                    deployment.id, "inactive", description="replaced by a newer deployment"
                )
                if isinstance(done, Unavailable):
                    return done
                marked.append(deployment.id)
        return tuple(marked)

    # -- the wire -------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        doing: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx (202 excepted); raises _Failed otherwise."""
        url = self.api_url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        # "All API requests must include a valid User-Agent header"; the version header pins
        # the shapes this module reads (REST API: "Getting started", "API versions").
        headers = {
            "Accept": "application/vnd.github+json",
            "User-Agent": self.user_agent,
            "X-GitHub-Api-Version": API_VERSION,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                raw = response.read()
                answer_headers = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            status = exc.code
            answer_headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
            try:
                raw = exc.read()
            except (OSError, HTTPException):
                raw = b""
        except _CrossOrigin as exc:
            shown = urlsplit(exc.location)
            raise self._fail(
                Unavailable(
                    "refused",
                    f"GitHub answered {exc.status} to another host "
                    f"({shown.scheme}://{shown.netloc}); not followed: GITHUB_TOKEN goes only "
                    f"to GITHUB_API_URL ({self.api_url})",
                    exc.status,
                ),
                doing,
            ) from None
        except TimeoutError:
            raise self._fail(
                Unavailable("timeout", f"GitHub did not answer within {self.timeout:g} s"), doing
            ) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._fail(
                    Unavailable("timeout", f"GitHub did not answer within {self.timeout:g} s"),
                    doing,
                ) from None
            raise self._fail(
                Unavailable("unreachable", f"GitHub could not be reached ({_reason(exc.reason)})"),
                doing,
            ) from None
        except (OSError, HTTPException) as exc:
            raise self._fail(
                Unavailable("unreachable", f"GitHub could not be reached ({_reason(exc)})"), doing
            ) from None

        decoded: Any = None
        try:
            decoded = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            if 200 <= status < 300:
                raise self._fail(
                    Unavailable("bad_answer", "GitHub's answer was not JSON", status), doing
                ) from None
        if 200 <= status < 300 and status != 202:
            return decoded
        message = decoded.get("message") if isinstance(decoded, dict) else None
        raise self._fail(_classify(status, answer_headers, message), doing)

    def _fail(self, unavailable: Unavailable, doing: str) -> _Failed:
        log.warning(
            "GitHub unavailable while %s: %s",
            doing,
            unavailable.reason,
            extra={"github_kind": unavailable.kind, "github_status": unavailable.status},
        )
        return _Failed(unavailable)

    def _bad_answer(self, doing: str, exc: Exception) -> Unavailable:
        unavailable = Unavailable("bad_answer", f"GitHub's answer could not be read ({exc})")
        self._fail(unavailable, doing)
        return unavailable


def _classify(status: int, headers: Mapping[str, str], message: str | None) -> Unavailable:
    """A non-2xx (or 202) answer as a reason a person can act on.

    Rate limits: "If you exceed your primary rate limit, you will receive a 403 Forbidden or
    429 Too Many Requests response, and the x-ratelimit-remaining header will be 0 … The
    x-ratelimit-reset header is in UTC epoch seconds." A secondary limit is a 403 or 429
    whose message says so, with retry-after when GitHub sends it
    (https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api).
    """
    said = f": {_clip(message, 120)}" if message else ""
    remaining = headers.get("x-ratelimit-remaining")
    retry_after = headers.get("retry-after")
    secondary = bool(message and "secondary rate limit" in message.lower())
    if status in (403, 429) and remaining == "0":
        reset = _epoch(headers.get("x-ratelimit-reset"))
        until = f" until {reset:%H:%M} UTC" if reset else ""
        return Unavailable(
            "rate_limited", f"GitHub's API rate limit is used up{until}", status, reset
        )
    if status in (403, 429) and (retry_after or secondary or status == 429):
        seconds = _int_or_none(retry_after)
        retry_at = datetime.now(UTC) + timedelta(seconds=seconds) if seconds is not None else None
        wait = f"; retry in {seconds} s" if seconds is not None else ""
        return Unavailable(
            "rate_limited",
            f"GitHub asked to slow down (rate limit, HTTP {status}){wait}",
            status,
            retry_at,
        )
    if status == 401:
        return Unavailable(
            "unauthorized", f"GitHub refused GITHUB_TOKEN (401{said or ' Unauthorized'})", status
        )
    if status == 403:
        return Unavailable(
            "forbidden",
            f"GitHub answered 403 Forbidden{said}; the token may lack permission on the repository",
            status,
        )
    if status == 404:
        return Unavailable(
            "not_found",
            "GitHub answered 404 Not Found: check GITHUB_REPOSITORY, that the commits are "
            "pushed, and that the token can read the repository",
            status,
        )
    if status in (202, 409, 422):
        return Unavailable("refused", f"GitHub refused (HTTP {status}){said}", status)
    if status >= 500:
        return Unavailable("server_error", f"GitHub had an error (HTTP {status})", status)
    return Unavailable("bad_answer", f"GitHub answered HTTP {status}{said}", status)


def _commit(raw: Any) -> CommitInfo:
    sha = str(raw["sha"])
    detail = raw["commit"]
    message = str(detail.get("message") or "")
    author = detail.get("author") or {}
    account = raw.get("author")  # null when the e-mail belongs to no GitHub account
    login = account.get("login") if isinstance(account, dict) else None
    return CommitInfo(
        sha=sha,
        title=message.strip().split("\n", 1)[0].strip(),
        author_name=str(author.get("name") or "unknown"),
        author_login=str(login) if login else None,
        url=str(raw.get("html_url") or ""),
    )


def _deployment(raw: Any) -> GitHubDeployment:
    return GitHubDeployment(
        id=int(raw["id"]),
        sha=str(raw["sha"]),
        ref=str(raw.get("ref") or ""),
        environment=str(raw.get("environment") or ""),
        description=str(raw.get("description") or ""),
        created_at=str(raw.get("created_at") or ""),
        url=str(raw.get("url") or ""),
        payload=dict(payload) if isinstance(payload := raw.get("payload"), dict) else {},
    )


def _status(raw: Any, deployment_id: int) -> GitHubDeploymentStatus:
    return GitHubDeploymentStatus(
        id=int(raw["id"]),
        deployment_id=int(deployment_id),
        state=str(raw["state"]),
        description=str(raw.get("description") or ""),
        log_url=str(raw.get("log_url") or raw.get("target_url") or ""),
        environment_url=str(raw.get("environment_url") or ""),
    )


def _page(number: int) -> dict[str, int]:
    return {"per_page": _PER_PAGE, "page": number}


def _list(answer: Any, key: str) -> list[Any]:
    value = answer[key]
    if not isinstance(value, list):
        raise TypeError(f"{key} is not a list")
    return value


def _int(answer: Any, key: str) -> int:
    value = answer[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is not a count")
    return value


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _iso(text: str) -> datetime:
    """GitHub's ISO 8601 times ("2026-11-26T22:27:31Z"), as aware UTC datetimes."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when.astimezone(UTC)


def _epoch(text: str | None) -> datetime | None:
    seconds = _int_or_none(text)
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(text: str) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return _clip(printable, 60)


def _reason(exc: object) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, HTTPException)):
        return "the connection dropped"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    text = str(exc).strip()
    return _clip(text, 80) if text else type(exc).__name__
