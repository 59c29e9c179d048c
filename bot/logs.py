"""Logs as one JSON line per event on stdout (CloudWatch reads them as they are).

Each line carries the deployment's id, service, tag, who and source where they apply, so one
filter (``{ $.deployment_id = "d-…" }``) follows a deployment end to end. Secret values
(Slack tokens, the signing secret) are replaced wherever they would appear.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

# uvicorn adds color_message (the message with terminal colours) to its records.
_STANDARD = {*vars(logging.makeLogRecord({})), "color_message"}


REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (six characters or more) replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = (), service: str = "") -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]
        self.service = service

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            line["service"] = self.service
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                line[key] = str(value) if not isinstance(value, int | float | bool) else value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, ensure_ascii=False))


def setup(level: str = "INFO", secrets: Iterable[str] = (), service: str = "") -> None:
    """Send every log record to stdout as JSON, replacing any earlier handlers."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(secrets, service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "urllib3", "slack_sdk.web.async_base_client", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
