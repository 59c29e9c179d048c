"""The HTTP surface of the hello-world service; it knows nothing of the bot."""

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from service import __version__

app = FastAPI(title="hello-world", version=__version__, docs_url=None, redoc_url=None)


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    """The behaviour of the service this one replaces: plain ``hello-world``."""
    return "hello-world"


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness for load balancers and the container health check."""
    return {"status": "ok", "version": __version__}
