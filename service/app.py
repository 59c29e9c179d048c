"""The HTTP surface of the hello-world service; it knows nothing of the bot."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from service import __version__

# What a build that was told nothing says (a local `docker build`, `uv run hello-world`).
UNKNOWN_RELEASE = "dev"


@dataclass(frozen=True)
class Release:
    """Which release this process is: the git tag and commit the image was built from.

    The release workflow passes both to the image build (docker/Dockerfile's build
    arguments), which puts them in the image's environment as RELEASE_VERSION and
    RELEASE_COMMIT; the package's own version says nothing about the release.
    """

    version: str
    commit: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Release:
        """The release named by the environment; ``dev`` for whatever is unset or blank."""
        return cls(
            version=environ.get("RELEASE_VERSION", "").strip() or UNKNOWN_RELEASE,
            commit=environ.get("RELEASE_COMMIT", "").strip() or UNKNOWN_RELEASE,
        )


def create_app(release: Release | None = None) -> FastAPI:
    """The service's app; ``release`` defaults to the one the environment names now."""
    known = release if release is not None else Release.from_environ()
    app = FastAPI(title="hello-world", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/", response_class=PlainTextResponse)
    async def hello() -> str:
        """The behaviour of the service this one replaces: plain ``hello-world``."""
        return "hello-world"

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness for the container health check, and which release answers."""
        return {"status": "ok", "version": known.version, "commit": known.commit}

    return app


app = create_app()
