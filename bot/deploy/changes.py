"""What a deploy changes: the commit of each image, the direction of a move, the commits.

Pure functions over ECR's DescribeImages ``imageDetails`` (this module calls no AWS API). CI
pushes every release image with its ``sha-<7>`` tag beside the version tags (bot/tags.py), so
the commit of an image is the sibling ``sha-`` tag on the same digest; an image without one
says so (``Image.sha is None``). The direction of a move comes from the repository's release
images ordered by version. A ``ChangeSummary`` adds what GitHub said about the commits, or
why it could not (``Gap``); ``render_text`` and ``render_mrkdwn`` show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from bot.github import CommitInfo, Comparison, Unavailable
from bot.mrkdwn import escape as escape_mrkdwn  # one escape for all of Slack's text
from bot.tags import DEFAULT_SUFFIX, TagError, parse_tag

if TYPE_CHECKING:
    from bot.github import GitHubClient

SHOWN_COMMITS = 10
_TITLE_CHARS = 80
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_KIND_ORDER = ("version", "minor", "major", "sha")

DirectionKind = Literal["forward", "backward", "same", "unknown"]
GapKind = Literal[
    "same_image",  # nothing changes, nothing to list
    "unknown_image",  # an image is not in ECR (or was never named)
    "no_sha_tag",  # an image has no sha- tag: its commit is unknown
    "no_repository",  # GITHUB_REPOSITORY unset: no link, no list
    "no_token",  # GITHUB_TOKEN unset: a link, no list
    "unavailable",  # GitHub unreachable, 404, rate-limited, 5xx …: a link, no list
    "not_fetched",  # the caller did not ask GitHub
]


@dataclass(frozen=True)
class Image:
    """One image of the repository, as DescribeImages tells it."""

    digest: str
    tags: tuple[str, ...]  # as in ECR (suffix included): version, minor, major, sha, others
    version: tuple[int, int, int] | None  # from its full version tag; None: not a release
    sha: str | None  # the commit, from the sha- tag ("abc1234"); None: no sha tag
    label: str  # how to name it: "v4.4.0", else "sha-abc1234", else the short digest
    pushed_at: datetime | None

    @property
    def commit(self) -> str:
        """The short commit, or "no sha tag"."""
        return self.sha[:7] if self.sha else "no sha tag"

    @property
    def described(self) -> str:
        """``v4.4.0 (abc1234)``, or ``v4.4.0 (no sha tag)``."""
        if self.sha and self.label == f"sha-{self.sha}":
            return self.label
        return f"{self.label} ({self.commit})"


@dataclass(frozen=True)
class Direction:
    """Where a move goes among the release images ordered by version."""

    kind: DirectionKind
    releases: int = 0  # how many releases forward or back; 0 for same and unknown
    reason: str = ""  # for unknown: why

    @property
    def text(self) -> str:
        """``forward 1 release``, ``back 3 releases``, ``the same image``, ``direction unknown``."""
        plural = "" if self.releases == 1 else "s"
        if self.kind == "forward":
            return f"forward {self.releases} release{plural}"
        if self.kind == "backward":
            return f"back {self.releases} release{plural}"
        if self.kind == "same":
            return "the same image"
        return "direction unknown"


@dataclass(frozen=True)
class Gap:
    """Why the commits are not listed."""

    kind: GapKind
    reason: str  # for a person: "GitHub's API rate limit is used up until 14:05 UTC"
    github: Unavailable | None = None


@dataclass(frozen=True)
class ChangeSummary:
    """From the image that runs to the one a deploy brings: direction, link, commits."""

    direction: Direction
    current: Image | None
    target: Image | None
    compare_url: str | None  # None: no repository, an image without sha tag, or the same image
    commits: tuple[CommitInfo, ...]  # newest first, at most SHOWN_COMMITS
    total_commits: int | None  # None: not known
    gap: Gap | None  # why the commits are not listed; None when they are
    removes: bool  # backward: the commits are the ones this deploy takes out
    github_status: str | None = None  # compare's status: ahead, behind, identical, diverged
    # The task definition's one line for this move (bot/deploy/plan_diff.py summary_line,
    # "Task definition: only the image changes."), when what runs was read; "" otherwise.
    task_line: str = ""

    @property
    def more(self) -> int:
        """Commits counted but not listed."""
        return max(0, (self.total_commits or 0) - len(self.commits))


# -- images ---------------------------------------------------------------------------------


def images_from_ecr(
    details: Iterable[Mapping[str, Any]], suffix: str = DEFAULT_SUFFIX
) -> tuple[Image, ...]:
    """Every image of a DescribeImages answer (its ``imageDetails``, all pages joined)."""
    return tuple(_image(detail, suffix) for detail in details)


def _image(detail: Mapping[str, Any], suffix: str) -> Image:
    parsed = []
    others = []
    for raw in detail.get("imageTags") or []:
        try:
            tag = parse_tag(str(raw), suffix)
        except TagError:
            tag = None
        # Only CI's exact tags count: a bare "v4.4.0" pushed by hand is not "v4.4.0<suffix>".
        if tag is not None and tag.value == raw:
            parsed.append(tag)
        else:
            others.append(str(raw))
    parsed.sort(key=lambda t: (_KIND_ORDER.index(t.kind), t.value))
    versions = [t for t in parsed if t.kind == "version"]
    top = max(versions, key=lambda t: _version_key(t.base), default=None)
    # Identical builds of two commits share a digest and carry both sha tags: the first by
    # name is shown, as any would be right for the image's content.
    shas = sorted(t.base.removeprefix("sha-") for t in parsed if t.kind == "sha")
    sha = shas[0][:7] if shas else None
    if top is not None:
        label = top.base
    elif sha is not None:
        label = f"sha-{sha}"
    else:
        label = str(detail.get("imageDigest", ""))[:19] or "an untagged image"
    pushed = detail.get("imagePushedAt")
    return Image(
        digest=str(detail.get("imageDigest", "")),
        tags=tuple(t.value for t in parsed) + tuple(sorted(others)),
        version=_version_key(top.base) if top else None,
        sha=sha,
        label=label,
        pushed_at=pushed if isinstance(pushed, datetime) else None,
    )


def _version_key(base: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in base.removeprefix("v").split("."))
    return major, minor, patch


def find_image(images: Sequence[Image], ref: str, suffix: str = DEFAULT_SUFFIX) -> Image | None:
    """The image ``ref`` names: a digest, a tag (bare or suffixed), or an image URI
    (``…/repo:tag`` or ``…/repo@sha256:…``). None if ECR has no such image."""
    ref = ref.strip()
    name = ref.rsplit("/", 1)[-1]
    if "@" in name:
        ref = name.split("@", 1)[1]
    elif ":" in name and not name.startswith("sha256:"):
        ref = name.split(":", 1)[1]
    if _DIGEST.fullmatch(ref):
        return next((image for image in images if image.digest == ref), None)
    try:
        tag = parse_tag(ref, suffix).value
    except TagError:
        tag = ref
    return next((image for image in images if tag in image.tags), None)


def commit_of(images: Sequence[Image], ref: str, suffix: str = DEFAULT_SUFFIX) -> str | None:
    """The short commit of the image ``ref`` names; None if unknown or without sha tag."""
    image = find_image(images, ref, suffix)
    return image.sha if image else None


def releases(images: Iterable[Image]) -> tuple[Image, ...]:
    """The release images (a full version tag), oldest version first."""
    found = [image for image in images if image.version is not None]
    return tuple(sorted(found, key=lambda image: image.version or (0, 0, 0)))


def direction(images: Sequence[Image], current: Image | None, target: Image | None) -> Direction:
    """Forward or back by how many releases, the same image, or unknown (and why)."""
    if target is None:
        return Direction("unknown", reason="the image to deploy is not in ECR")
    if current is None:
        return Direction("unknown", reason="the running image is not in ECR")
    if current.digest == target.digest:
        return Direction("same")
    if current.version is None:
        return Direction("unknown", reason=f"the running image {current.label} is not a release")
    if target.version is None:
        return Direction("unknown", reason=f"{target.label} is not a release")
    ordered = [image.digest for image in releases(images)]
    steps = ordered.index(target.digest) - ordered.index(current.digest)
    if steps > 0:
        return Direction("forward", steps)
    if steps < 0:
        return Direction("backward", -steps)
    return Direction("unknown", reason="both images carry the same version")


def change_range(
    images: Sequence[Image], current: str | None, target: str, suffix: str = DEFAULT_SUFFIX
) -> tuple[str, str] | None:
    """``(base, head)`` to compare for this move: the commits it brings, or, going back, the
    commits it takes out. None when there is nothing to compare (same image, unknown image,
    an image without sha tag)."""
    old = find_image(images, current, suffix) if current else None
    new = find_image(images, target, suffix)
    moving = direction(images, old, new)
    if old is None or new is None or moving.kind == "same" or not old.sha or not new.sha:
        return None
    if old.sha == new.sha:
        return None
    return (new.sha, old.sha) if moving.kind == "backward" else (old.sha, new.sha)


# -- the summary ----------------------------------------------------------------------------


def summarize(
    images: Sequence[Image],
    current: str | None,
    target: str,
    *,
    compare_url: str | None = None,
    comparison: Comparison | Unavailable | None = None,
    suffix: str = DEFAULT_SUFFIX,
) -> ChangeSummary:
    """The summary of moving from ``current`` (None: nothing runs) to ``target``.

    ``compare_url`` and ``comparison`` are what the caller got for ``change_range(…)``
    (``GitHubClient.compare_url`` and ``GitHubClient.compare``); a missing link means
    GITHUB_REPOSITORY is not set.
    """
    old = find_image(images, current, suffix) if current else None
    new = find_image(images, target, suffix)
    moving = direction(images, old, new)
    removes = moving.kind == "backward"

    def summary(gap: Gap | None, url: str | None = None, **found: Any) -> ChangeSummary:
        return ChangeSummary(moving, old, new, url, removes=removes, gap=gap, **found)

    empty: dict[str, Any] = {"commits": (), "total_commits": None}
    if moving.kind == "same":
        return summary(
            Gap("same_image", "the same image runs already"), commits=(), total_commits=0
        )
    if new is None or old is None:
        what = "the running image" if new is not None else f"`{target}`"
        return summary(Gap("unknown_image", f"{what} is not in ECR"), **empty)
    for image in (old, new):
        if not image.sha:
            return summary(
                Gap("no_sha_tag", f"{image.label} has no sha- tag, so its commit is unknown"),
                **empty,
            )
    if old.sha == new.sha:  # a rebuild of the same commit
        return summary(None, compare_url, commits=(), total_commits=0)
    if compare_url is None:
        return summary(Gap("no_repository", "GITHUB_REPOSITORY is not set"), **empty)
    if comparison is None:
        return summary(Gap("not_fetched", "the commits were not fetched"), compare_url, **empty)
    if isinstance(comparison, Unavailable):
        kind: GapKind = "no_token" if comparison.kind == "no_token" else "unavailable"
        return summary(Gap(kind, comparison.reason, comparison), compare_url, **empty)
    return summary(
        None,
        compare_url,
        commits=comparison.commits[:SHOWN_COMMITS],
        total_commits=comparison.total_commits,
        github_status=comparison.status,
    )


def describe_change(
    images: Sequence[Image],
    current: str | None,
    target: str,
    github: GitHubClient,
    suffix: str = DEFAULT_SUFFIX,
) -> ChangeSummary:
    """``summarize`` with GitHub asked: the one function here that calls out (GitHub only,
    never AWS). It never raises for GitHub's sake; a failure is the summary's ``gap``."""
    span = change_range(images, current, target, suffix)
    url = github.compare_url(*span) if span else None
    comparison = github.compare(*span) if span and url else None
    return summarize(images, current, target, compare_url=url, comparison=comparison, suffix=suffix)


def reverse(summary: ChangeSummary) -> ChangeSummary:
    """The same move the other way: a deployment's Rollback takes out the commits the
    deployment brought (the compare range, oldest to newest, stays the same)."""
    moving = summary.direction
    flip: dict[str, DirectionKind] = {"forward": "backward", "backward": "forward"}
    kind = flip.get(moving.kind, moving.kind)
    reason = moving.reason
    old, new = summary.target, summary.current
    if kind == "unknown" and old is not None and new is not None:
        if old.version is None:
            reason = f"the running image {old.label} is not a release"
        elif new.version is None:
            reason = f"{new.label} is not a release"
    return replace(
        summary,
        direction=Direction(kind, moving.releases, reason),
        current=old,
        target=new,
        removes=kind == "backward",
    )


def commit_text(commit: str | None) -> str:
    """How a record's commit reads: the short sha, "no sha tag", or "" (not known)."""
    if commit is None:
        return ""
    return commit[:7] if commit else "no sha tag"


# -- renderings -----------------------------------------------------------------------------


def headline(summary: ChangeSummary) -> str:
    """One line: ``Forward 2 releases: v4.3.0 (abc1234) → v4.5.0 (def5678)``."""
    move = _move(summary)
    moving = summary.direction
    if moving.kind == "same":
        return f"Same image: {move} runs already; nothing changes."
    if moving.kind == "forward":
        return f"Forward {moving.releases} release{_s(moving.releases)}: {move}"
    if moving.kind == "backward":
        return f"Backward: this goes back {moving.releases} release{_s(moving.releases)}, {move}"
    why = f" ({moving.reason})" if moving.reason else ""
    return f"Direction unknown{why}: {move}"


def render_text(
    summary: ChangeSummary, limit: int = SHOWN_COMMITS, max_chars: int | None = None
) -> str:
    """Plain text, for the terminal and for Slack's plain_text (a confirm dialog's text holds
    at most 300 characters: pass ``max_chars``; commit lines are dropped to fit)."""
    head = [headline(summary)]
    if summary.compare_url:
        head.append(summary.compare_url)
    lines = [
        f"  {c.short_sha}  {_clip(c.title, _TITLE_CHARS)} ({c.author})"
        for c in summary.commits[:limit]
    ]
    text = _join(head, _count_line(summary, bool(lines)), lines, _tail(summary, len(lines)))
    while max_chars is not None and len(text) > max_chars and lines:
        lines.pop()
        count = _count_line(summary, bool(lines))
        text = _join(head, count, lines, _tail(summary, len(lines)))
    if max_chars is not None and len(text) > max_chars:
        text = _clip(text, max_chars)
    return text


def render_confirm(summary: ChangeSummary | None, intro: str, max_chars: int) -> str:
    """Plain text for a button's confirm dialog: ``intro``, the headline, the commits that
    fit in ``max_chars`` (short titles, no link: a dialog cannot follow one), a count."""
    if summary is None:
        return _clip(intro, max_chars)
    head = [intro, headline(summary)] + ([summary.task_line] if summary.task_line else [])
    lines = [f"• {c.short_sha} {_clip(c.title, 44)} ({c.author})" for c in summary.commits]
    text = _join(head, _count_line(summary, bool(lines)), lines, _tail(summary, len(lines)))
    while len(text) > max_chars and lines:
        lines.pop()
        text = _join(head, _count_line(summary, bool(lines)), lines, _tail(summary, len(lines)))
    return _clip(text, max_chars)


def render_mrkdwn(summary: ChangeSummary, limit: int = SHOWN_COMMITS) -> str:
    """Slack mrkdwn: the link on the headline, commits linked by sha, user text escaped."""
    move_line = escape_mrkdwn(headline(summary))
    if summary.direction.kind == "backward":
        move_line = f"*{move_line}*"  # going back is the one to notice
    if summary.compare_url:
        move_line += f" (<{summary.compare_url}|compare>)"
    lines = []
    for c in summary.commits[:limit]:
        # Code inside a link's label shows its backticks literally in Slack; around the whole
        # link it renders as code and links (atomist/slack-messages#37: "you need to put the
        # back ticks around the url ... Inside the label formatting doesn't seem to work").
        sha = f"`<{c.url}|{c.short_sha}>`" if c.url else f"`{c.short_sha}`"
        title = escape_mrkdwn(_clip(c.title, _TITLE_CHARS))
        lines.append(f"• {sha} {title} ({escape_mrkdwn(c.author)})")
    count = _count_line(summary, bool(lines))
    tail = _tail(summary, len(lines))
    return _join(
        [move_line],
        escape_mrkdwn(count) if count else "",
        lines,
        escape_mrkdwn(tail) if tail else "",
    )


def _move(summary: ChangeSummary) -> str:
    new = summary.target.described if summary.target else "an unknown image"
    if summary.direction.kind == "same":
        return new
    old = summary.current.described if summary.current else "nothing"
    return f"{old} → {new}"


def _count_line(summary: ChangeSummary, listed: bool) -> str:
    total = summary.total_commits
    if summary.gap is not None:
        if summary.gap.kind == "same_image":
            return ""
        return f"Commits not listed: {summary.gap.reason}."
    if total is None:
        return ""
    if total == 0:
        if summary.github_status == "behind":
            return "No new commits: the new image is behind the running one."
        return "No commits between them."
    noun = f"{total} commit{_s(total)}"
    if summary.removes:
        noun = f"Takes out {noun}"
    elif summary.github_status == "diverged":
        noun = f"{noun} on the new side (the histories diverged)"
    return f"{noun}, newest first:" if listed else f"{noun}."


def _tail(summary: ChangeSummary, shown: int) -> str:
    left = (summary.total_commits or 0) - shown
    return f"… and {left} more" if shown and left > 0 else ""


def _join(head: list[str], count: str, lines: list[str], tail: str) -> str:
    return "\n".join(part for part in [*head, count, *lines, tail] if part)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _s(n: int) -> str:
    return "" if n == 1 else "s"
