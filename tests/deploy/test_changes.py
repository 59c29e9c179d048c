"""What a deploy changes, from moto's DescribeImages and the GitHub stand-in over HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import boto3
import pytest

from bot.deploy.changes import (
    ChangeSummary,
    Image,
    change_range,
    commit_of,
    describe_change,
    direction,
    escape_mrkdwn,
    find_image,
    images_from_ecr,
    releases,
    render_mrkdwn,
    render_text,
    summarize,
)
from bot.github import GitHubClient
from bot.local.aws import MotoServer
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator
from bot.local.stack import push_image
from bot.settings import Settings

REPO = DEFAULT_REPOSITORY
SUFFIX = "-ecr-ecs-fargate"


class World(NamedTuple):
    """ECR in moto with CI's pushes, and the GitHub history they were built from."""

    github: GitHubEmulator
    settings: Settings
    images: tuple[Image, ...]
    sha: dict[str, str]  # version or name -> full commit sha


def _ecr(aws: MotoServer, settings: Settings) -> Any:
    return boto3.client("ecr", endpoint_url=aws.endpoint_url, region_name=settings.aws_region)


def _push_by_hand(ecr: Any, settings: Settings, tag: str, seed: str) -> None:
    """An image pushed outside CI: one tag, no sha- tag beside it."""
    layer = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": layer,
        },
        "layers": [],
    }
    ecr.put_image(
        repositoryName=settings.ecr_repository, imageManifest=json.dumps(manifest), imageTag=tag
    )


def describe(aws: MotoServer, settings: Settings) -> tuple[Image, ...]:
    """DescribeImages, every page, read as deploybot reads it."""
    pages = (
        _ecr(aws, settings)
        .get_paginator("describe_images")
        .paginate(repositoryName=settings.ecr_repository)
    )
    return images_from_ecr([d for page in pages for d in page["imageDetails"]], SUFFIX)


@pytest.fixture(scope="module")
def pushed(moto_server: MotoServer) -> Iterator[World]:
    """Built once for the module (pushing is the slow part); the tests only read it."""
    aws = moto_server
    aws.reset()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    ecr = _ecr(aws, settings)
    ecr.create_repository(repositoryName=settings.ecr_repository)
    with GitHubEmulator() as github:
        sha: dict[str, str] = {}
        sha["v4.3.0"] = github.add_commits(["release: v4.3.0"])[0]
        sha["v4.4.0"] = github.add_commits(["feat: a", "fix: b", "release: v4.4.0"])[-1]
        middle = [f"feat: change {i}" for i in range(10)]
        middle.insert(4, "fix: <b>bold</b> & <!channel> <https://evil.example|click>")
        sha["v4.5.0"] = github.add_commits([*middle, "release: v4.5.0"])[-1]
        sha["v4.6.0"] = github.add_commits(["fix: one more"], author="Bob <Builder>", login=None)[0]
        sha["main"] = github.add_commits(["chore: on main, not released"])[0]
        _push_by_hand(ecr, settings, f"v4.2.0{SUFFIX}", "an old hand-made image")
        for version in ("v4.3.0", "v4.4.0", "v4.5.0", "v4.6.0"):
            push_image(aws.endpoint_url, settings, version, sha=sha[version])
        # CI's build of a branch: only the sha tag.
        _push_by_hand(ecr, settings, f"sha-{sha['main'][:7]}{SUFFIX}", "a build of main")
        _push_by_hand(ecr, settings, "v4.5.0", "a bare tag pushed by hand")
        yield World(github, settings, describe(aws, settings), sha)


@pytest.fixture
def world(pushed: World) -> World:
    """The module's ECR and GitHub, with GitHub's calls and faults forgotten."""
    pushed.github.clear()
    return pushed


def gh(world: World, token: str | None = DEFAULT_TOKEN) -> GitHubClient:
    return GitHubClient(REPO, token, world.github.api_url)


def tag(version: str) -> str:
    return f"{version}{SUFFIX}"


# -- the commit of an image --------------------------------------------------------------------


def test_the_commit_of_an_image_is_its_sibling_sha_tag(world: World) -> None:
    for version in ("v4.3.0", "v4.4.0", "v4.5.0", "v4.6.0"):
        image = find_image(world.images, tag(version))
        assert image is not None
        assert image.sha == world.sha[version][:7]
        assert commit_of(world.images, version) == world.sha[version][:7]
        assert image.described == f"{version} ({world.sha[version][:7]})"
        # The same image, named by its digest, its sha tag or its URI, is the same answer.
        uri = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/{world.settings.ecr_repository}"
        assert find_image(world.images, image.digest) == image
        assert find_image(world.images, f"{uri}@{image.digest}") == image
        assert find_image(world.images, f"{uri}:{tag(version)}") == image
        assert find_image(world.images, f"sha-{world.sha[version][:7]}") == image
    # Moving tags were re-pointed by each release; the newest holds them now.
    newest = find_image(world.images, "v4")
    assert newest is not None and newest.sha == world.sha["v4.6.0"][:7]


def test_an_image_without_sha_tag_says_so(world: World) -> None:
    old = find_image(world.images, "v4.2.0")
    assert old is not None
    assert (old.sha, old.commit, old.described) == (None, "no sha tag", "v4.2.0 (no sha tag)")
    assert commit_of(world.images, "v4.2.0") is None
    branch = find_image(world.images, f"sha-{world.sha['main'][:7]}")
    assert branch is not None and branch.version is None
    assert branch.described == f"sha-{world.sha['main'][:7]}"
    # A bare "v4.5.0" pushed by hand is not CI's release tag, and not the v4.5.0 release.
    bare = next(i for i in world.images if "v4.5.0" in i.tags)
    assert bare.version is None and bare.sha is None
    assert find_image(world.images, "v4.5.0") != bare
    assert find_image(world.images, "v9.9.9") is None
    assert commit_of(world.images, "v9.9.9") is None


def test_releases_are_ordered_by_version_not_by_push(world: World) -> None:
    assert [i.label for i in releases(world.images)] == [
        "v4.2.0",
        "v4.3.0",
        "v4.4.0",
        "v4.5.0",
        "v4.6.0",
    ]


# -- direction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target", "kind", "steps", "text"),
    [
        ("v4.4.0", "v4.6.0", "forward", 2, "forward 2 releases"),
        ("v4.5.0", "v4.6.0", "forward", 1, "forward 1 release"),
        ("v4.6.0", "v4.3.0", "backward", 3, "back 3 releases"),
        ("v4.4.0", "v4.4.0", "same", 0, "the same image"),
        ("v4.6.0", "v4", "same", 0, "the same image"),
        ("main", "v4.6.0", "unknown", 0, "direction unknown"),
    ],
)
def test_direction(
    world: World, current: str, target: str, kind: str, steps: int, text: str
) -> None:
    ref = f"sha-{world.sha['main'][:7]}" if current == "main" else current
    moving = direction(
        world.images, find_image(world.images, ref), find_image(world.images, target)
    )
    assert (moving.kind, moving.releases, moving.text) == (kind, steps, text)


def test_direction_unknown_says_why(world: World) -> None:
    v46 = find_image(world.images, "v4.6.0")
    assert direction(world.images, v46, None).reason == "the image to deploy is not in ECR"
    assert direction(world.images, None, v46).reason == "the running image is not in ECR"
    branch = find_image(world.images, f"sha-{world.sha['main'][:7]}")
    assert "not a release" in direction(world.images, v46, branch).reason


def test_the_range_brings_commits_forward_and_takes_them_out_backward(world: World) -> None:
    short = {v: s[:7] for v, s in world.sha.items()}
    assert change_range(world.images, "v4.4.0", "v4.6.0") == (short["v4.4.0"], short["v4.6.0"])
    assert change_range(world.images, "v4.6.0", "v4.3.0") == (short["v4.3.0"], short["v4.6.0"])
    assert change_range(world.images, "v4.6.0", "v4.6.0") is None
    assert change_range(world.images, "v4.2.0", "v4.6.0") is None  # no sha tag on v4.2.0
    assert change_range(world.images, None, "v4.6.0") is None


# -- the summary, with GitHub ------------------------------------------------------------------


def test_forward_with_commits(world: World) -> None:
    summary = describe_change(world.images, tag("v4.4.0"), tag("v4.6.0"), gh(world))
    a, b = world.sha["v4.4.0"][:7], world.sha["v4.6.0"][:7]
    assert summary.compare_url == f"https://github.com/{REPO}/compare/{a}...{b}"
    assert (summary.total_commits, len(summary.commits), summary.more) == (13, 10, 3)
    assert summary.gap is None and not summary.removes
    assert summary.commits[0].title == "fix: one more"
    assert summary.commits[0].author == "Bob <Builder>"
    text = render_text(summary)
    assert text.splitlines()[:3] == [
        f"Forward 2 releases: v4.4.0 ({a}) → v4.6.0 ({b})",
        summary.compare_url,
        "13 commits, newest first:",
    ]
    assert f"  {b}  fix: one more (Bob <Builder>)" in text
    assert text.endswith("… and 3 more")


def test_backward_lists_what_it_takes_out(world: World) -> None:
    summary = describe_change(world.images, tag("v4.6.0"), tag("v4.3.0"), gh(world))
    assert summary.direction.kind == "backward" and summary.removes
    assert summary.total_commits == 16
    text = render_text(summary)
    assert text.startswith("Backward: this goes back 3 releases, v4.6.0 (")
    assert "Takes out 16 commits, newest first:" in text
    mrkdwn = render_mrkdwn(summary)
    assert mrkdwn.startswith("*Backward: this goes back 3 releases")


def test_mrkdwn_escapes_what_people_wrote(world: World) -> None:
    summary = describe_change(world.images, tag("v4.4.0"), tag("v4.5.0"), gh(world))
    out = render_mrkdwn(summary)
    assert (
        "fix: &lt;b&gt;bold&lt;/b&gt; &amp; &lt;!channel&gt; &lt;https://evil.example|click&gt;"
        in out
    )
    assert "<!channel>" not in out and "<https://evil.example" not in out
    # Our own links stay links: the compare link, and each sha to its commit.
    assert f"(<{summary.compare_url}|compare>)" in out
    newest = summary.commits[0]
    # Backticks around the link, never in its label: Slack shows those literally.
    assert f"• `<{newest.url}|{newest.short_sha}>` release: v4.5.0 (alice)" in out
    assert "|`" not in out
    six = describe_change(world.images, tag("v4.5.0"), tag("v4.6.0"), gh(world))
    assert "(Bob &lt;Builder&gt;)" in render_mrkdwn(six)
    assert escape_mrkdwn("a & b < c > d") == "a &amp; b &lt; c &gt; d"


def test_a_confirm_dialog_gets_what_fits(world: World) -> None:
    summary = describe_change(world.images, tag("v4.3.0"), tag("v4.6.0"), gh(world))
    text = render_text(summary, max_chars=300)
    assert len(text) <= 300
    assert text.startswith("Forward 3 releases:")
    assert summary.compare_url in text
    shown = [line for line in text.splitlines() if line.startswith("  ")]
    assert 0 < len(shown) < 10
    assert text.endswith(f"… and {16 - len(shown)} more")


@pytest.mark.parametrize(
    ("fault", "kind", "words"),
    [
        ("drop", "unavailable", "GitHub could not be reached"),
        ("rate_limit", "unavailable", "GitHub's API rate limit is used up until"),
        ("fail", "unavailable", "GitHub had an error (HTTP 500)"),
    ],
)
def test_github_trouble_keeps_the_link_and_says_why(
    world: World, fault: str, kind: str, words: str
) -> None:
    getattr(world.github, fault)("compare")
    summary = describe_change(world.images, tag("v4.4.0"), tag("v4.6.0"), gh(world))
    assert summary.gap is not None and summary.gap.kind == kind
    assert words in summary.gap.reason
    assert summary.compare_url is not None and summary.commits == ()
    text = render_text(summary)
    assert summary.compare_url in text
    assert f"Commits not listed: {summary.gap.reason}." in text
    assert text.startswith("Forward 2 releases:")


def test_github_404(world: World) -> None:
    other = GitHubClient("octo-org/elsewhere", DEFAULT_TOKEN, world.github.api_url)
    summary = describe_change(world.images, tag("v4.4.0"), tag("v4.6.0"), other)
    assert summary.gap is not None and summary.gap.github is not None
    assert summary.gap.github.kind == "not_found"
    assert "check GITHUB_REPOSITORY" in render_text(summary)


def test_without_token_a_link_and_no_call(world: World) -> None:
    summary = describe_change(world.images, tag("v4.4.0"), tag("v4.6.0"), gh(world, token=None))
    assert summary.compare_url is not None
    assert summary.gap is not None and summary.gap.kind == "no_token"
    assert "Commits not listed: GITHUB_TOKEN is not set." in render_text(summary)
    assert world.github.calls == []


def test_without_repository_no_link(world: World) -> None:
    none = GitHubClient(None, DEFAULT_TOKEN, world.github.api_url)
    summary = describe_change(world.images, tag("v4.4.0"), tag("v4.6.0"), none)
    assert summary.compare_url is None
    assert summary.gap is not None and summary.gap.kind == "no_repository"
    assert "https://" not in render_text(summary)
    assert world.github.calls == []


def test_an_image_without_sha_tag_means_no_link(world: World) -> None:
    summary = describe_change(world.images, tag("v4.2.0"), tag("v4.4.0"), gh(world))
    assert summary.direction.kind == "forward" and summary.direction.releases == 2
    assert summary.compare_url is None
    assert summary.gap is not None and summary.gap.kind == "no_sha_tag"
    assert "v4.2.0 has no sha- tag, so its commit is unknown" in render_text(summary)
    assert world.github.calls == []


def test_same_image_and_unknown_image(world: World) -> None:
    same = describe_change(world.images, tag("v4.6.0"), "v4", gh(world))
    assert render_text(same).startswith("Same image: v4.6.0 (")
    assert same.compare_url is None and same.total_commits == 0
    missing = describe_change(world.images, tag("v4.6.0"), tag("v9.9.9"), gh(world))
    assert missing.gap is not None and missing.gap.kind == "unknown_image"
    first = describe_change(world.images, None, tag("v4.6.0"), gh(world))
    assert render_text(first).startswith("Direction unknown (the running image is not in ECR)")
    assert world.github.calls == []


def test_unknown_direction_still_compares_commits(world: World) -> None:
    branch = f"sha-{world.sha['main'][:7]}"
    ahead = describe_change(world.images, tag("v4.6.0"), branch, gh(world))
    assert ahead.direction.kind == "unknown" and ahead.total_commits == 1
    assert ahead.commits[0].title == "chore: on main, not released"
    behind = describe_change(world.images, branch, tag("v4.6.0"), gh(world))
    assert behind.github_status == "behind" and behind.total_commits == 0
    assert "No new commits: the new image is behind the running one." in render_text(behind)


def test_summarize_is_pure(world: World) -> None:
    """Without a comparison nothing is listed, and the summary says so."""
    summary: ChangeSummary = summarize(
        world.images, tag("v4.4.0"), tag("v4.6.0"), compare_url="https://example.test/c"
    )
    assert summary.gap is not None and summary.gap.kind == "not_fetched"
    assert summary.compare_url == "https://example.test/c"
