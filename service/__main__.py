"""``hello-world``: run the service with uvicorn (SIGTERM stops it cleanly)."""

import argparse
import logging
import signal

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hello-world", description="Serve hello-world over HTTP.")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=49000, help="port to listen on (default 49000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # uvicorn handles SIGTERM itself (stop accepting, finish in-flight requests), then re-raises
    # the signal against the handler that was in place before it started. A no-op handler there
    # turns that re-raise into a normal return, so ECS sees exit 0 rather than "killed by 15".
    # uvicorn's access log is the one line per request.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        "service.app:app",
        host=args.bind,
        port=args.port,
        access_log=True,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
