"""The service's access log: one JSON object per answered request, on stdout.

ECS's awslogs driver sends each line to CloudWatch Logs as one event, and the service stack's
metric filter (cloudformation/service.yml, ``ServerErrorsFilter``) counts the events whose
``status`` is 500 or more: the signal its deployment alarm watches. A JSON line is what
CloudWatch's JSON filter patterns select on (``{ $.status >= 500 }``), with no dependence on
how a text line happens to be spaced. uvicorn still writes the access record (its protocol
handler knows the status once the answer starts, including the 500 its error middleware sends
for an exception); this module only formats it. Everything else uvicorn logs (start, stop,
tracebacks) keeps its plain form on stderr, and no JSON filter pattern matches a plain line.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

from uvicorn.config import LOGGING_CONFIG

# What the access line says it is, so a filter can tell it from any other JSON a later
# version might log.
ACCESS = "access"


class JsonAccessFormatter(logging.Formatter):
    """uvicorn's access record as one line of JSON.

    uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with (client, method, path with query, HTTP
    version, status) as the record's arguments (uvicorn/protocols/http/*_impl.py); any other
    record on this logger keeps its text as ``message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "type": ACCESS,
        }
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            line |= {
                "client": str(client),
                "method": str(method),
                "path": str(path),
                "protocol": f"HTTP/{http_version}",
                "status": int(status),  # type: ignore[call-overload]
            }
        else:
            line["message"] = record.getMessage()
        return json.dumps(line, separators=(",", ":"))


def log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with the access lines in JSON."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"] = {"()": JsonAccessFormatter}
    return config
