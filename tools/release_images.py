"""Tag the images CI pushed by digest, refusing to move a release tag (release.yml, #24).

    python -m tools.release_images --image DIGEST REF [REF ...] [--image DIGEST REF ...]

Each ``REF`` is ``REGISTRY/REPOSITORY:TAG`` (what ``deploybot release-tags`` gives, prefixed
by the job). First every tag is looked up in ECR: an exact one (``vX.Y.Z-…`` or ``sha-…``)
that already names another digest is refused, naming both, and nothing is tagged (exit 1):
a release tag keeps its image, and ``deploybot`` deploys what it names. Moving tags
(``vX.Y-…``, ``vX-…``) are meant to move. Then each image gets its tags, re-using the manifest
ECR has for the digest (batch-get-image, then put-image: the way ECR's guide "Retagging an
image" does it, https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-retag.html).
Exit 2: bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import boto3

from bot.tags import DEFAULT_SUFFIX, TagError, parse_tag

# Every manifest type buildx pushes: an image index when it adds attestations, else a manifest.
MEDIA_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]


@dataclass(frozen=True)
class Wanted:
    repository: str
    tag: str
    digest: str

    @property
    def exact(self) -> bool:
        """A tag that must keep its image: not one of the moving ``vX.Y-…``, ``vX-…``."""
        suffix = os.environ.get("IMAGE_TAG_SUFFIX") or DEFAULT_SUFFIX
        try:
            return not parse_tag(self.tag, suffix).is_moving
        except TagError:
            return True  # not ours to judge: keep it where it is


def _wanted(groups: Sequence[Sequence[str]]) -> list[Wanted]:
    wanted = []
    for digest, *refs in groups:
        if not digest.startswith("sha256:") or not refs:
            raise ValueError(f"--image wants a digest (sha256:…) and its refs, got {digest!r}")
        for ref in refs:
            name, _, tag = ref.rpartition(":")
            repository = name.split("/", 1)[1] if "/" in name else name
            if not repository or not tag:
                raise ValueError(f"{ref!r} is not REGISTRY/REPOSITORY:TAG")
            wanted.append(Wanted(repository, tag, digest))
    return wanted


def _named(ecr: Any, repository: str, tag: str) -> str | None:
    """The digest ``tag`` names in ``repository`` now, or None. One tag a call: several tags
    of one image come back as one image, naming one of them (moto does so)."""
    found = ecr.batch_get_image(
        repositoryName=repository, imageIds=[{"imageTag": tag}], acceptedMediaTypes=MEDIA_TYPES
    )
    return next((str(i["imageId"]["imageDigest"]) for i in found.get("images", [])), None)


def moved(ecr: Any, wanted: list[Wanted]) -> list[str]:
    """Why the exact tags of ``wanted`` that name another digest already would move."""
    problems = []
    for w in wanted:
        if not w.exact:
            continue
        there = _named(ecr, w.repository, w.tag)
        if there is not None and there != w.digest:
            problems.append(
                f"{w.repository}:{w.tag} names {there} already; this release built "
                f"{w.digest}. A release tag keeps its image: not pushed"
            )
    return problems


def put_tags(ecr: Any, wanted: list[Wanted]) -> None:
    manifests: dict[tuple[str, str], dict[str, Any]] = {}
    for w in wanted:
        key = (w.repository, w.digest)
        if key not in manifests:
            found = ecr.batch_get_image(
                repositoryName=w.repository,
                imageIds=[{"imageDigest": w.digest}],
                acceptedMediaTypes=MEDIA_TYPES,
            )["images"]
            if not found:
                raise SystemExit(f"::error::{w.repository} has no image {w.digest}")
            manifests[key] = found[0]
        image = manifests[key]
        # ImageAlreadyExists: a re-run, the tag names this digest already.
        with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):
            ecr.put_image(
                repositoryName=w.repository,
                imageManifest=image["imageManifest"],
                imageManifestMediaType=image.get("imageManifestMediaType") or MEDIA_TYPES[-1],
                imageTag=w.tag,
                imageDigest=w.digest,
            )
        print(f"{w.repository}:{w.tag} -> {w.digest}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.release_images")
    parser.add_argument("--image", nargs="+", action="append", required=True, metavar="DIGEST REF")
    args = parser.parse_args(argv)
    try:
        wanted = _wanted(args.image)
    except ValueError as exc:
        print(f"release_images: {exc}", file=sys.stderr)
        return 2
    ecr = boto3.client("ecr")
    problems = moved(ecr, wanted)
    for problem in problems:
        # GitHub's workflow command: the run's summary shows it as an error annotation.
        print(f"::error::{problem}")
    if problems:
        return 1
    put_tags(ecr, wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
