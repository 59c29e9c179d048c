"""The tag grammar and CI's release tags, through the real ``deploybot release-tags`` too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.tags import TagError, parse_tag, release_tags

SUFFIX = "-ecr-ecs-fargate"


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("v4.4.0-ecr-ecs-fargate", "v4.4.0-ecr-ecs-fargate", "version"),
        ("v4.4.0", "v4.4.0-ecr-ecs-fargate", "version"),
        ("  v4.4.0  ", "v4.4.0-ecr-ecs-fargate", "version"),
        ("v4.4-ecr-ecs-fargate", "v4.4-ecr-ecs-fargate", "minor"),
        ("v4", "v4-ecr-ecs-fargate", "major"),
        ("sha-abc1234-ecr-ecs-fargate", "sha-abc1234-ecr-ecs-fargate", "sha"),
        ("sha-abc1234", "sha-abc1234-ecr-ecs-fargate", "sha"),
    ],
)
def test_accepted_tags(text: str, value: str, kind: str) -> None:
    tag = parse_tag(text, SUFFIX)
    assert (tag.value, tag.kind) == (value, kind)
    assert tag.base == value.removesuffix(SUFFIX)


@pytest.mark.parametrize(
    "text",
    ["v1;rm -rf /", "", "   ", "x" * 300, "v4.4.0\u202e", "vé", "latest", "v04.1.0", "sha-XYZ"],
)
def test_refused_tags_say_what_is_expected(text: str) -> None:
    with pytest.raises(TagError) as err:
        parse_tag(text, SUFFIX)
    message = str(err.value)
    assert "v4.4.0" in message or "characters" in message
    assert "\u202e" not in message


# Python's \d matches every Unicode decimal digit; a tag takes the ASCII ones only.
@pytest.mark.parametrize(
    "text",
    [
        "v1\u0664.0.0",  # v1٤.0.0, ARABIC-INDIC DIGIT FOUR
        "v\uff14.4.0",  # FULLWIDTH DIGIT FOUR
        "v4\uff14.0.0",
        "v4.4.\u0660",  # ARABIC-INDIC DIGIT ZERO
        "v4.4.1\u0967-ecr-ecs-fargate",  # DEVANAGARI DIGIT ONE
    ],
)
def test_non_ascii_digits_are_refused(text: str) -> None:
    with pytest.raises(TagError, match="is not an image tag"):
        parse_tag(text, SUFFIX)


def test_release_tags_refuse_non_ascii_digits() -> None:
    with pytest.raises(TagError):
        release_tags("v4.\u0664.0-ecr-ecs-fargate", "abc1234")


def test_release_tags_for_a_release() -> None:
    expected = [
        "v4.4.0-ecr-ecs-fargate",
        "v4.4-ecr-ecs-fargate",
        "v4-ecr-ecs-fargate",
        "sha-abc1234-ecr-ecs-fargate",
    ]
    assert release_tags("refs/tags/v4.4.0-ecr-ecs-fargate", "abc1234def5678") == expected
    assert release_tags("v4.4.0-ecr-ecs-fargate", "abc1234def5678") == expected


@pytest.mark.parametrize("ref", ["refs/heads/main", "main", "refs/tags/nightly"])
def test_release_tags_off_a_release_is_only_the_sha_tag(ref: str) -> None:
    assert release_tags(ref, "ABC1234DEF") == ["sha-abc1234-ecr-ecs-fargate"]


@pytest.mark.parametrize(
    ("ref", "sha"),
    [
        ("refs/tags/v4.4.x-ecr-ecs-fargate", "abc1234"),
        ("v4.4-ecr-ecs-fargate", "abc1234"),
        ("refs/heads/a b", "abc1234"),
        ("refs/heads/../x", "abc1234"),
        ("main", "xyz"),
        ("main", ""),
    ],
)
def test_malformed_refs_are_refused(ref: str, sha: str) -> None:
    with pytest.raises(TagError):
        release_tags(ref, sha)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_release_tags() -> None:
    done = run_cli("release-tags", "--ref", "v4.4.0-ecr-ecs-fargate", "--sha", "abc1234def5678")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "v4.4.0-ecr-ecs-fargate",
        "v4.4-ecr-ecs-fargate",
        "v4-ecr-ecs-fargate",
        "sha-abc1234-ecr-ecs-fargate",
    ]
    assert run_cli("release-tags", "--ref", "main", "--sha", "abc1234").stdout.split() == [
        "sha-abc1234-ecr-ecs-fargate"
    ]


def test_cli_malformed_ref_exits_2_with_a_message() -> None:
    done = run_cli("release-tags", "--ref", "refs/tags/v4.x-ecr-ecs-fargate", "--sha", "abc1234")
    assert done.returncode == 2
    assert "not vMAJOR.MINOR.PATCH" in done.stderr
    assert "Traceback" not in done.stderr
