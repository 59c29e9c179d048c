"""The image-tag grammar: parse a tag someone asked for, and compute the tags CI pushes.

CI pushes four tags for a release ``v4.4.0-ecr-ecs-fargate`` at commit ``abc1234…``:
the full version, the moving minor and major tags, and the commit's ``sha-`` tag,
each with the stack's suffix. docker/metadata-action's ``type=semver`` reads the
suffixed tag as a pre-release and pushes neither moving tag, so we compute them here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SUFFIX = "-ecr-ecs-fargate"
MAX_TAG_LENGTH = 128  # ECR's own limit for an image tag

# ASCII digits only: Python's \d also matches Arabic-Indic or full-width digits, which no
# registry or person means by a version.
_VERSION = re.compile(
    r"v(?P<major>0|[1-9][0-9]{0,5})(?:\.(?P<minor>0|[1-9][0-9]{0,5}))?"
    r"(?:\.(?P<patch>0|[1-9][0-9]{0,5}))?"
)
_SHA = re.compile(r"sha-(?P<sha>[0-9a-f]{7,40})")
_HEX = re.compile(r"[0-9a-fA-F]{7,40}")
# What git allows in a ref, restricted to the printable ASCII CI refs are made of.
_REF = re.compile(r"[A-Za-z0-9._/+@-]{1,255}")


class TagError(ValueError):
    """A tag or ref that is not of our grammar; the message says what is expected."""


@dataclass(frozen=True)
class ImageTag:
    """A parsed image tag. ``value`` is the tag as it stands in ECR, suffix included."""

    value: str
    kind: str  # "version" (vX.Y.Z), "minor" (vX.Y), "major" (vX) or "sha"
    suffix: str

    @property
    def base(self) -> str:
        """The tag without the suffix: ``v4.4.0``, ``sha-abc1234``."""
        return self.value[: len(self.value) - len(self.suffix)] if self.suffix else self.value

    @property
    def is_moving(self) -> bool:
        """Moving tags (``v4.4-…``, ``v4-…``) are re-pointed by every release."""
        return self.kind in ("minor", "major")

    def __str__(self) -> str:
        return self.value


def _examples(suffix: str) -> str:
    return f"v4.4.0{suffix}, v4.4{suffix}, v4{suffix}, sha-abc1234{suffix}, or a bare v4.4.0"


def _shown(text: str) -> str:
    """The user's input, safe and short enough to quote back."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return printable if len(printable) <= 60 else printable[:57] + "..."


def parse_tag(text: str, suffix: str = DEFAULT_SUFFIX) -> ImageTag:
    """Parse what a person typed into an image tag, adding ``suffix`` to a bare one.

    Raises TagError with a message that says what a valid tag looks like.
    """
    raw = text.strip()
    if not raw:
        raise TagError(f"No tag given. Give an image tag such as {_examples(suffix)}.")
    if len(raw) > MAX_TAG_LENGTH:
        raise TagError(
            f"That tag is {len(raw)} characters long; image tags have at most {MAX_TAG_LENGTH}."
        )
    body = raw[: -len(suffix)] if suffix and raw.endswith(suffix) else raw
    if m := _VERSION.fullmatch(body):
        kind = "version" if m["patch"] else "minor" if m["minor"] else "major"
    elif _SHA.fullmatch(body):
        kind = "sha"
    else:
        raise TagError(f"`{_shown(raw)}` is not an image tag. Expected {_examples(suffix)}.")
    return ImageTag(value=body + suffix, kind=kind, suffix=suffix)


def release_tags(ref: str, sha: str, suffix: str = DEFAULT_SUFFIX) -> list[str]:
    """The image tags CI pushes for a git ``ref`` at commit ``sha``, most specific first.

    A release tag (``refs/tags/v4.4.0-ecr-ecs-fargate`` or the bare tag name) gives the
    version, minor, major and sha tags; any other well-formed ref gives only the sha tag.
    """
    if not _HEX.fullmatch(sha):
        raise TagError(f"`{_shown(sha)}` is not a commit sha (7 to 40 hexadecimal digits).")
    sha_tag = f"sha-{sha[:7].lower()}{suffix}"
    if not _REF.fullmatch(ref) or ".." in ref or ref.endswith(("/", ".", ".lock")):
        raise TagError(f"`{_shown(ref)}` is not a git ref.")
    name = ref.removeprefix("refs/tags/")
    is_tag_ref = ref.startswith("refs/tags/")
    looks_like_release = name.startswith("v") and name.endswith(suffix)
    if is_tag_ref or looks_like_release:
        m = _VERSION.fullmatch(name.removesuffix(suffix)) if name.endswith(suffix) else None
        if m and m["patch"]:
            major, minor, patch = m["major"], m["minor"], m["patch"]
            return [
                f"v{major}.{minor}.{patch}{suffix}",
                f"v{major}.{minor}{suffix}",
                f"v{major}{suffix}",
                sha_tag,
            ]
        if looks_like_release:
            raise TagError(
                f"`{_shown(name)}` looks like a release tag but is not vMAJOR.MINOR.PATCH{suffix}."
            )
    return [sha_tag]
