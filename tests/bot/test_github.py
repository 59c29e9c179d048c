"""The GitHub client against the stand-in over HTTP: answers read right, every failure typed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bot.github import (
    SHOWN_COMMITS,
    Comparison,
    GitHubClient,
    GitHubDeployment,
    GitHubDeploymentStatus,
    Unavailable,
    web_url_for,
)
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.settings import Settings
from tests.helpers import free_port

REPO = DEFAULT_REPOSITORY


@pytest.fixture
def emu() -> Iterator[GitHubEmulator]:
    with GitHubEmulator() as emulator:
        yield emulator


def client(emu: GitHubEmulator, token: str | None = DEFAULT_TOKEN, **kw: object) -> GitHubClient:
    return GitHubClient(REPO, token, emu.api_url, **kw)  # type: ignore[arg-type]


def test_settings_name_the_repository_token_and_api() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, GITHUB_REPOSITORY="octo/app", GITHUB_TOKEN="t0ken-123", GITHUB_API_URL=""
    )
    gh = GitHubClient.from_settings(settings)
    assert (gh.repository, gh.has_token, gh.api_url) == ("octo/app", True, "https://api.github.com")
    assert "t0ken-123" not in repr(settings)
    empty = Settings(_env_file=None, GITHUB_REPOSITORY="", GITHUB_TOKEN="")  # type: ignore[call-arg]
    assert (empty.github_repository, empty.github_token) == (None, None)


def test_compare_gives_the_newest_ten_the_count_and_the_link(emu: GitHubEmulator) -> None:
    base = emu.add_commits(["chore: the release before"])[0]
    shas = emu.add_commits([f"feat: change {i}\n\nbody {i}" for i in range(11)])
    shas += emu.add_commits(["fix: by someone GitHub does not know"], author="Zed", login=None)
    result = client(emu).compare(base[:7], shas[-1][:7])
    assert isinstance(result, Comparison)
    assert (result.status, result.total_commits, result.more) == ("ahead", 12, 2)
    assert len(result.commits) == SHOWN_COMMITS
    newest = result.commits[0]
    assert (newest.sha, newest.short_sha) == (shas[-1], shas[-1][:7])
    assert (newest.title, newest.author, newest.author_login) == (
        "fix: by someone GitHub does not know",
        "Zed",
        None,
    )
    assert [c.title for c in result.commits[1:3]] == ["feat: change 10", "feat: change 9"]
    assert result.commits[1].author == "alice"
    assert newest.url == f"https://github.com/{REPO}/commit/{shas[-1]}"
    assert result.html_url == f"https://github.com/{REPO}/compare/{base[:7]}...{shas[-1][:7]}"
    call = emu.calls_of("compare")[0]
    assert call.token == DEFAULT_TOKEN
    assert call.headers["user-agent"] == "deploybot"
    assert call.headers["x-github-api-version"] == "2022-11-28"


@pytest.mark.parametrize("count", [100, 101, 205, 300])
def test_compare_pages_to_the_exact_newest_ten(emu: GitHubEmulator, count: int) -> None:
    base = emu.add_commits(["base"])[0]
    shas = emu.add_commits([f"commit {i}" for i in range(count)])
    result = client(emu).compare(base, shas[-1])
    assert isinstance(result, Comparison)
    assert result.total_commits == count
    assert [c.sha for c in result.commits] == shas[::-1][:SHOWN_COMMITS]
    assert len(emu.calls_of("compare")) <= 3


def test_without_token_the_link_is_built_and_github_is_not_called(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one", "two"])
    gh = client(emu, token=None)
    assert gh.compare_url(shas[0][:7], shas[1][:7]) == (
        f"https://github.com/{REPO}/compare/{shas[0][:7]}...{shas[1][:7]}"
    )
    for result in (
        gh.compare(shas[0], shas[1]),
        gh.create_deployment(shas[1], "production"),
        gh.set_status(1, "success"),
    ):
        assert isinstance(result, Unavailable)
        assert (result.kind, result.reason) == ("no_token", "GITHUB_TOKEN is not set")
    assert emu.calls == []


@pytest.mark.parametrize(
    ("repository", "reason"),
    [
        (None, "GITHUB_REPOSITORY is not set"),
        ("not a repo", "GITHUB_REPOSITORY `not a repo` is not owner/name"),
        ("../../etc", "GITHUB_REPOSITORY `../../etc` is not owner/name"),
    ],
)
def test_without_a_repository_there_is_no_link(
    emu: GitHubEmulator, repository: str | None, reason: str
) -> None:
    gh = GitHubClient(repository, DEFAULT_TOKEN, emu.api_url)
    assert gh.compare_url("abc1234", "def5678") is None
    result = gh.compare("abc1234", "def5678")
    assert isinstance(result, Unavailable)
    assert (result.kind, result.reason) == ("not_configured", reason)
    assert emu.calls == []


def test_bad_input_never_reaches_github(emu: GitHubEmulator) -> None:
    gh = client(emu)
    assert isinstance(gh.compare("abc1234", "x/../../y"), Unavailable)
    assert gh.compare_url("abc1234", "main") is None
    bad_state = gh.set_status(1, "done")
    assert isinstance(bad_state, Unavailable) and bad_state.kind == "bad_input"
    assert "in_progress" in bad_state.reason
    assert emu.calls == []


# -- every failure is a value with a reason ------------------------------------------------


def _compare(emu: GitHubEmulator, **kw: object) -> Unavailable:
    shas = emu.add_commits(["one", "two"])
    result = client(emu, **kw).compare(shas[0], shas[1])
    assert isinstance(result, Unavailable), result
    return result


def test_404(emu: GitHubEmulator) -> None:
    result = GitHubClient(REPO, DEFAULT_TOKEN, emu.api_url).compare("abc1234", "def5678")
    assert isinstance(result, Unavailable)
    assert (result.kind, result.status) == ("not_found", 404)
    assert "check GITHUB_REPOSITORY" in result.reason


@pytest.mark.parametrize("status", [403, 429])
def test_primary_rate_limit_says_until_when(emu: GitHubEmulator, status: int) -> None:
    emu.rate_limit("compare", status=status, reset_in=1800)
    result = _compare(emu)
    assert (result.kind, result.status) == ("rate_limited", status)
    assert result.retry_at is not None
    assert abs(result.retry_at.timestamp() - (time.time() + 1800)) < 60
    assert result.reason == f"GitHub's API rate limit is used up until {result.retry_at:%H:%M} UTC"


def test_secondary_rate_limit(emu: GitHubEmulator) -> None:
    emu.rate_limit("compare", status=403, secondary=True, reset_in=60)
    result = _compare(emu)
    assert result.kind == "rate_limited"
    assert "retry in 60 s" in result.reason


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (500, "server_error", "GitHub had an error (HTTP 500)"),
        (502, "server_error", "GitHub had an error (HTTP 502)"),
        (403, "forbidden", "403 Forbidden: Forbidden; the token may lack permission"),
        (401, "unauthorized", "GitHub refused GITHUB_TOKEN (401: Bad credentials)"),
        (200, "bad_answer", "could not be read"),  # 200 without the fields GitHub documents
    ],
)
def test_error_answers(emu: GitHubEmulator, status: int, kind: str, words: str) -> None:
    emu.fail("compare", status)
    result = _compare(emu)
    assert result.kind == kind
    assert words in result.reason


def test_a_wrong_token(emu: GitHubEmulator) -> None:
    result = _compare(emu, token="expired-token")
    assert (result.kind, result.status) == ("unauthorized", 401)
    assert "expired-token" not in result.reason


def test_an_answer_that_is_not_json(emu: GitHubEmulator) -> None:
    emu.garble("compare")
    result = _compare(emu)
    assert (result.kind, result.reason) == ("bad_answer", "GitHub's answer was not JSON")


def test_a_dropped_connection(emu: GitHubEmulator) -> None:
    emu.drop("compare")
    result = _compare(emu)
    assert result.kind == "unreachable"
    assert result.reason.startswith("GitHub could not be reached")


def test_a_slow_answer_times_out_quickly(emu: GitHubEmulator) -> None:
    emu.slow("compare", seconds=30)
    started = time.monotonic()
    result = _compare(emu, timeout=0.5)
    assert (result.kind, result.reason) == ("timeout", "GitHub did not answer within 0.5 s")
    assert time.monotonic() - started < 5


def test_nothing_listening() -> None:
    gh = GitHubClient(REPO, DEFAULT_TOKEN, f"http://127.0.0.1:{free_port()}", timeout=2)
    result = gh.compare("abc1234", "def5678")
    assert isinstance(result, Unavailable)
    assert (result.kind, result.reason) == (
        "unreachable",
        "GitHub could not be reached (connection refused)",
    )
    assert isinstance(gh.create_deployment("abc1234", "production"), Unavailable)


@pytest.mark.parametrize("fault", ["fail", "drop", "garble"])
def test_a_failing_later_page_fails_the_whole_comparison(emu: GitHubEmulator, fault: str) -> None:
    base = emu.add_commits(["base"])[0]
    shas = emu.add_commits([f"commit {i}" for i in range(150)])
    getattr(emu, fault)("compare", skip=1)  # page 1 answers, the last page (2) does not
    result = client(emu).compare(base, shas[-1])
    # Page 1 holds the oldest commits: no half list is passed off as the newest ten.
    assert isinstance(result, Unavailable)
    assert [c.query["page"] for c in emu.calls_of("compare")] == ["1", "2"]


# -- deployments ------------------------------------------------------------------------------


def test_a_deployment_of_an_older_commit_with_failing_checks_is_recorded(
    emu: GitHubEmulator,
) -> None:
    shas = emu.add_commits(["v4.4.0", "v4.5.0"])
    emu.set_check(shas[0], "ci/test", "failure")  # the image exists: CI's checks are history
    gh = client(emu)
    deployment = gh.create_deployment(
        shas[0][:7], "production", "rollback to v4.4.0 by alice", {"tag": "v4.4.0"}
    )
    assert isinstance(deployment, GitHubDeployment), deployment
    assert (deployment.sha, deployment.environment) == (shas[0], "production")
    sent = emu.calls_of("create_deployment")[0].body
    assert sent["auto_merge"] is False and sent["required_contexts"] == []
    assert sent["payload"] == {"tag": "v4.4.0"}
    status = gh.set_status(
        deployment.id,
        "in_progress",
        log_url="https://eu-west-1.console.aws.amazon.com/ecs/v2/x",
        environment_url="https://app.example",
        description="rolling out " + "x" * 200,
    )
    assert isinstance(status, GitHubDeploymentStatus), status
    assert status.state == "in_progress"
    assert len(status.description) == 140 and status.description.endswith("…")
    assert status.environment_url == "https://app.example"
    assert isinstance(gh.set_status(deployment.id, "success"), GitHubDeploymentStatus)
    assert emu.states()[deployment.id] == ["in_progress", "success"]
    listed = gh.statuses(deployment.id)
    assert not isinstance(listed, Unavailable)
    assert [s.state for s in listed] == ["success", "in_progress"]


def test_the_replaced_production_deployment_is_made_inactive(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one", "two", "three"])
    gh = client(emu)
    ids = []
    for sha in shas:
        d = gh.create_deployment(sha, "production")
        assert isinstance(d, GitHubDeployment)
        ids.append(d.id)
    gh.set_status(ids[0], "success")
    gh.set_status(ids[1], "failure")
    gh.set_status(ids[2], "success")
    assert emu.states()[ids[0]] == ["success"]  # GitHub leaves production deployments alone
    assert gh.deactivate_previous("production", keep_id=ids[2]) == (ids[0],)
    assert emu.states() == {
        ids[0]: ["success", "inactive"],
        ids[1]: ["failure"],
        ids[2]: ["success"],
    }
    listed = gh.deployments(environment="production")
    assert not isinstance(listed, Unavailable)
    assert [d.id for d in listed] == ids[::-1]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("rate_limit", "rate_limited"), ("drop", "unreachable"), ("fail", "server_error")],
)
def test_deployment_failures_are_values(emu: GitHubEmulator, fault: str, kind: str) -> None:
    shas = emu.add_commits(["one"])
    getattr(emu, fault)("create_deployment")
    result = client(emu).create_deployment(shas[0], "production")
    assert isinstance(result, Unavailable) and result.kind == kind
    emu.fail("create_status", 404)
    missing = client(emu).set_status(12345, "success")
    assert isinstance(missing, Unavailable) and missing.kind == "not_found"


def test_a_refused_deployment_says_what_github_said(emu: GitHubEmulator) -> None:
    result = client(emu).create_deployment("abc1234", "production")
    assert isinstance(result, Unavailable)
    assert (result.kind, result.status) == ("refused", 422)
    assert result.reason == "GitHub refused (HTTP 422): No ref found for: abc1234"


@pytest.mark.parametrize(
    ("api", "web"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("http://127.0.0.1:8080", "https://github.com"),
    ],
)
def test_web_links_follow_the_api(api: str, web: str) -> None:
    assert web_url_for(api) == web
    assert GitHubClient("o/r", None, api).compare_url("abc1234", "def5678") == (
        f"{web}/o/r/compare/abc1234...def5678"
    )


# -- the token stays with GITHUB_API_URL's origin (#24) -----------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("call", ["compare", "create_deployment"])
def test_a_redirect_to_another_origin_is_not_followed(
    emu: GitHubEmulator, status: int, call: str
) -> None:
    """A proxy or GitHub Enterprise host answering 3xx to another port: the other server (a
    second stand-in that records every request and its token) hears nothing."""
    shas = emu.add_commits(["one", "two"])
    with GitHubEmulator(token=None) as elsewhere:
        emu.redirect(elsewhere.api_url, call, status=status)  # type: ignore[arg-type]
        gh = client(emu)
        result = (
            gh.compare(shas[0], shas[1])
            if call == "compare"
            else gh.create_deployment(shas[1], "production")
        )
        assert [c.token for c in elsewhere.calls] == [], "the token went to another origin"
        assert elsewhere.calls == []
    assert isinstance(result, Unavailable)
    assert (result.kind, result.status) == ("refused", status)
    assert result.reason == (
        f"GitHub answered {status} to another host ({elsewhere.api_url}); not followed: "
        f"GITHUB_TOKEN goes only to GITHUB_API_URL ({emu.api_url})"
    )
    assert len(emu.calls_of(call)) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [301, 307])
def test_a_redirect_within_the_origin_is_followed_with_the_token(
    emu: GitHubEmulator, status: int
) -> None:
    """GitHub's own redirects (a renamed repository: 301 or 307) stay on its origin."""
    shas = emu.add_commits(["one", "two"])
    emu.redirect(emu.api_url, "compare", status=status)
    result = client(emu).compare(shas[0], shas[1])
    assert isinstance(result, Comparison) and result.total_commits == 1
    calls = emu.calls_of("compare")
    assert [(c.status, c.token) for c in calls] == [(status, DEFAULT_TOKEN), (200, DEFAULT_TOKEN)]
