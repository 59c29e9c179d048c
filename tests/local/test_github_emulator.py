"""The GitHub stand-in over real HTTP: GitHub's shapes, its refusals, and the injected faults."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator

REPO = DEFAULT_REPOSITORY


@pytest.fixture
def emu() -> Iterator[GitHubEmulator]:
    with GitHubEmulator() as emulator:
        yield emulator


def call(
    emu: GitHubEmulator,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = DEFAULT_TOKEN,
    agent: str | None = "tests",
    timeout: float = 10,
) -> tuple[int, dict[str, str], Any]:
    """One request as any HTTP client sends it: status, lower-cased headers, decoded body."""
    headers = {"Accept": "application/vnd.github+json"}
    if agent:
        headers["User-Agent"] = agent
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(emu.url + path, data=data, headers=headers, method=method)
    if agent is None:  # urllib adds its own User-Agent unless told otherwise
        request.add_unredirected_header("User-Agent", "")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def compare(emu: GitHubEmulator, base: str, head: str, query: str = "") -> Any:
    return call(emu, "GET", f"/repos/{REPO}/compare/{base}...{head}{query}")


# -- compare -------------------------------------------------------------------------------


def test_compare_lists_the_commits_head_has_oldest_first(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["feat: one", "fix: two\n\nwhy it was broken", "chore: three"])
    status, headers, body = compare(emu, shas[0][:7], shas[2][:7])
    assert status == 200
    assert body["status"] == "ahead"
    assert (body["ahead_by"], body["behind_by"], body["total_commits"]) == (2, 0, 2)
    assert [c["sha"] for c in body["commits"]] == shas[1:]
    first = body["commits"][0]
    assert first["commit"]["message"] == "fix: two\n\nwhy it was broken"
    assert first["commit"]["author"]["name"] == "Alice Example"
    assert first["author"]["login"] == "alice"
    assert first["html_url"] == f"https://github.com/{REPO}/commit/{shas[1]}"
    assert body["html_url"] == f"https://github.com/{REPO}/compare/{shas[0][:7]}...{shas[2][:7]}"
    assert body["files"] == []
    assert headers["x-ratelimit-remaining"] == "4999"
    assert emu.calls_of("compare", answered=200)[0].token == DEFAULT_TOKEN


def test_compare_status_behind_identical_and_diverged(emu: GitHubEmulator) -> None:
    main = emu.add_commits(["one", "two", "three"])
    side = emu.add_commits(["side fix"], parent=main[0], branch="hotfix", login=None)
    assert compare(emu, main[2], main[0])[2]["status"] == "behind"
    assert compare(emu, main[2], main[0])[2]["behind_by"] == 2
    assert compare(emu, main[2], main[0])[2]["commits"] == []
    assert compare(emu, main[1], main[1])[2]["status"] == "identical"
    diverged = compare(emu, main[2], side[0])[2]
    assert (diverged["status"], diverged["ahead_by"], diverged["behind_by"]) == ("diverged", 1, 2)
    assert diverged["merge_base_commit"]["sha"] == main[0]
    assert diverged["commits"][0]["author"] is None  # an e-mail GitHub links to no account
    assert compare(emu, "main", "hotfix")[2]["status"] == "diverged"


def test_compare_of_an_unknown_commit_is_404(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one"])
    status, _, body = compare(emu, shas[0], "deadbee")
    assert status == 404
    assert body["message"] == "Not Found"
    assert compare(emu, shas[0], shas[0])[0] == 200
    assert call(emu, "GET", f"/repos/{REPO}/compare/{shas[0]}")[0] == 404  # no "..."
    assert call(emu, "GET", f"/repos/octo-org/other/compare/{shas[0]}...{shas[0]}")[0] == 404


def test_compare_pages_and_the_250_commit_limit(emu: GitHubEmulator) -> None:
    shas = emu.add_commits([f"commit {i}" for i in range(260)])
    _, _, whole = compare(emu, shas[0], shas[-1])
    # Without paging: 250 commits, "the last commit in the list is the most recent".
    assert whole["total_commits"] == 259
    assert len(whole["commits"]) == 250
    assert whole["commits"][-1]["sha"] == shas[-1]
    status, headers, page = compare(emu, shas[0], shas[-1], "?per_page=100&page=3")
    assert status == 200
    assert [c["sha"] for c in page["commits"]] == shas[201:]
    assert page["total_commits"] == 259
    assert "files" not in page  # only page 1 carries the files
    assert 'rel="prev"' in headers["link"] and 'rel="next"' not in headers["link"]
    _, headers, first = compare(emu, shas[0], shas[-1], "?per_page=500")  # at most 100
    assert len(first["commits"]) == 100
    assert 'page=3>; rel="last"' in headers["link"]


# -- deployments and statuses ----------------------------------------------------------------


def test_a_deployment_and_its_statuses(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one", "two"])
    status, _, deployment = call(
        emu,
        "POST",
        f"/repos/{REPO}/deployments",
        {
            "ref": shas[1][:7],
            "environment": "staging",
            "description": "v4.5.0 by alice",
            "payload": {"tag": "v4.5.0"},
            "auto_merge": False,
            "required_contexts": [],
        },
    )
    assert status == 201
    assert deployment["sha"] == shas[1] and deployment["ref"] == shas[1][:7]
    assert deployment["environment"] == "staging"
    assert deployment["production_environment"] is False
    assert deployment["payload"] == {"tag": "v4.5.0"}
    assert deployment["creator"]["login"] == "deploybot[bot]"
    path = f"/repos/{REPO}/deployments/{deployment['id']}/statuses"
    for state in ("in_progress", "success"):
        status, _, body = call(
            emu, "POST", path, {"state": state, "log_url": "https://logs.example/1"}
        )
        assert status == 201 and body["state"] == state
        assert body["target_url"] == body["log_url"] == "https://logs.example/1"
    _, _, listed = call(emu, "GET", path)
    assert [s["state"] for s in listed] == ["success", "in_progress"]  # newest first
    assert (
        call(emu, "GET", f"/repos/{REPO}/deployments/{deployment['id']}")[2]["id"]
        == (deployment["id"])
    )
    assert emu.states() == {deployment["id"]: ["in_progress", "success"]}


def test_auto_merge_and_commit_checks_stop_a_deployment_unless_turned_off(
    emu: GitHubEmulator,
) -> None:
    shas = emu.add_commits(["old", "new"])
    emu.set_check(shas[0], "ci/test", "failure")
    # auto_merge defaults to true: an older sha gets main merged into it, not deployed (202).
    status, _, body = call(emu, "POST", f"/repos/{REPO}/deployments", {"ref": shas[0]})
    assert status == 202
    assert "Auto-merged main" in body["message"]
    # Commit statuses are verified unless required_contexts is [] (409 Conflict).
    status, _, body = call(
        emu, "POST", f"/repos/{REPO}/deployments", {"ref": shas[0], "auto_merge": False}
    )
    assert status == 409 and body["errors"][0]["contexts"] == ["ci/test"]
    status, _, _ = call(
        emu,
        "POST",
        f"/repos/{REPO}/deployments",
        {"ref": shas[0], "auto_merge": False, "required_contexts": []},
    )
    assert status == 201
    assert len(emu.deployments()) == 1


def test_production_deployments_are_not_made_inactive_by_github(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one", "two"])
    ids: dict[str, list[int]] = {"production": [], "staging": []}
    for environment in ids:
        for sha in shas:
            _, _, d = call(
                emu,
                "POST",
                f"/repos/{REPO}/deployments",
                {"ref": sha, "environment": environment, "auto_merge": False},
            )
            call(emu, "POST", f"/repos/{REPO}/deployments/{d['id']}/statuses", {"state": "success"})
            ids[environment].append(d["id"])
    states = emu.states()
    # auto_inactive touches "prior non-transient, non-production environment deployments".
    assert states[ids["staging"][0]] == ["success", "inactive"]
    assert states[ids["production"][0]] == ["success"]
    _, _, listed = call(emu, "GET", f"/repos/{REPO}/deployments?environment=production")
    assert [d["id"] for d in listed] == ids["production"][::-1]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"state": "done"}, 422),
        ({"state": "success", "description": "x" * 141}, 422),
        ("not json", 400),
    ],
)
def test_bad_statuses_are_refused(emu: GitHubEmulator, body: Any, status: int) -> None:
    shas = emu.add_commits(["one"])
    _, _, d = call(emu, "POST", f"/repos/{REPO}/deployments", {"ref": shas[0]})
    assert call(emu, "POST", f"/repos/{REPO}/deployments/{d['id']}/statuses", body)[0] == status
    assert call(emu, "POST", f"/repos/{REPO}/deployments/999/statuses", {"state": "success"})[
        0
    ] == (404)


def test_tokens_and_private_repositories(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one"])
    deploy = {"ref": shas[0]}
    assert call(emu, "POST", f"/repos/{REPO}/deployments", deploy, token=None)[0] == 401
    status, _, body = call(emu, "POST", f"/repos/{REPO}/deployments", deploy, token="wrong")
    assert (status, body["message"]) == (401, "Bad credentials")
    assert compare(emu, shas[0], shas[0])[0] == 200
    assert call(emu, "GET", f"/repos/{REPO}/compare/{shas[0]}...{shas[0]}", token=None)[0] == 200
    emu.add_repository("octo-org/secret", private=True)
    secret = emu.add_commits(["hidden"], repository="octo-org/secret")[0]
    path = f"/repos/octo-org/secret/compare/{secret}...{secret}"
    assert call(emu, "GET", path, token=None)[0] == 404  # GitHub hides what you may not see
    assert call(emu, "GET", path)[0] == 200
    assert call(emu, "GET", path, agent=None)[0] == 403  # no User-Agent: rejected


# -- faults ----------------------------------------------------------------------------------


def test_failures_come_as_github_sends_them(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one"])
    emu.fail("compare", 500, times=1)
    emu.fail("compare", 404, times=1)
    assert compare(emu, shas[0], shas[0])[:1] == (500,)
    status, _, body = compare(emu, shas[0], shas[0])
    assert (status, body["message"]) == (404, "Not Found")
    assert compare(emu, shas[0], shas[0])[0] == 200
    assert [c.fault for c in emu.calls] == ["status", "status", None]


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limits_carry_githubs_headers(emu: GitHubEmulator, status: int) -> None:
    shas = emu.add_commits(["one"])
    emu.rate_limit(status=status, reset_in=600)
    got, headers, body = compare(emu, shas[0], shas[0])
    assert got == status
    assert headers["x-ratelimit-remaining"] == "0"
    assert abs(int(headers["x-ratelimit-reset"]) - (time.time() + 600)) < 30
    assert "rate limit exceeded" in body["message"]
    emu.rate_limit("create_deployment", secondary=True, reset_in=60)
    got, headers, body = call(emu, "POST", f"/repos/{REPO}/deployments", {"ref": shas[0]})
    assert (got, headers["retry-after"]) == (403, "60")
    assert "secondary rate limit" in body["message"]
    assert compare(emu, shas[0], shas[0])[0] == 200  # each fault was for one call


def test_a_dropped_connection_and_a_slow_answer(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one"])
    emu.drop("compare")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        compare(emu, shas[0], shas[0])
    assert emu.calls_of("compare")[0].status is None
    emu.slow("compare", seconds=30)
    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call(emu, "GET", f"/repos/{REPO}/compare/{shas[0]}...{shas[0]}", timeout=0.3)
    assert time.monotonic() - started < 10
    emu.garble("compare")
    request = urllib.request.Request(
        f"{emu.url}/repos/{REPO}/compare/{shas[0]}...{shas[0]}", headers={"User-Agent": "t"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.load(resp)


def test_wait_for_sees_calls_from_other_threads(emu: GitHubEmulator) -> None:
    shas = emu.add_commits(["one"])
    emu.clear()
    compare(emu, shas[0], shas[0])
    assert emu.wait_for(lambda: emu.calls_of("compare"), timeout=10, what="a compare")
    with pytest.raises(TimeoutError, match="a deployment"):
        emu.wait_for(lambda: emu.calls_of("create_deployment"), timeout=0.2, what="a deployment")


def test_commits_can_be_named_by_the_shas_images_carry(emu: GitHubEmulator) -> None:
    """The playground and the tests seed the commits ECR's sha- tags name."""
    release = "ab" * 20
    shas = emu.add_commits(["feat: one", "release: v1"], named=[None, release])
    assert shas[1] == release and shas[0] != release
    status, _, body = compare(emu, shas[0][:7], release[:7])
    assert status == 200 and [c["sha"] for c in body["commits"]] == [release]
    with pytest.raises(ValueError, match="not a new 40-digit"):
        emu.add_commits(["again"], named=[release])
    with pytest.raises(ValueError, match="one sha"):
        emu.add_commits(["a", "b"], named=[None])
