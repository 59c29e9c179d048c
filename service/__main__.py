"""``hello-world``: run the service with uvicorn (SIGTERM stops it cleanly)."""

import argparse
import logging
import signal
from typing import Any

import uvicorn

from service.logs import log_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hello-world", description="Serve hello-world over HTTP.")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=49000, help="port to listen on (default 49000)")
    args = parser.parse_args(argv)
    serve("service.app:app", args.bind, args.port)


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` (an ASGI app or its import string) as the service runs in its image."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests), then re-raises
    # the signal against the handler that was in place before it started. A no-op handler there
    # turns that re-raise into a normal return, so ECS sees exit 0 rather than "killed by 15".
    # uvicorn's access log is the one line per request, in JSON (service/logs.py): the
    # stack's 5xx metric filter reads it.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=True,
        log_config=log_config(),
        log_level="info",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
