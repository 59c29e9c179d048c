"""The hello-world service: a FastAPI app that answers ``hello-world``."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deploybot")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"
