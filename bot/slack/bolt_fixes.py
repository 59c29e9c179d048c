"""A fix for one slack_bolt parsing bug that users of a deploy bot would meet.

slack_bolt's ``parse_body`` treats any form body that merely *contains* the word "payload"
as an interactivity payload (``if "payload" in body``). A slash command whose text, user
name or channel name says "payload" (``/deploy payload-fix``) then parses to ``{}`` and Bolt
answers 404: Slack shows the user "dispatch_failed". We parse the form first and look for a
``payload`` *field*, which is what the check means. Signature verification is untouched: it
works on the raw body, which we do not change.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import slack_bolt.request.async_request
import slack_bolt.request.request


def parse_body(body: str, content_type: str | None) -> dict[str, Any]:
    if not body:
        return {}
    if content_type == "application/json" or body.startswith("{"):
        parsed: dict[str, Any] = json.loads(body)
        return parsed
    form = dict(parse_qsl(body, keep_blank_values=True))
    if "payload" in form:
        payload: dict[str, Any] = json.loads(form["payload"])
        return payload
    return form


def install() -> None:
    """Use our parse_body in Bolt's request classes (idempotent)."""
    # Bolt's Request classes call their module's global ``parse_body``, which the modules import
    # without exporting it: rebinding that global is the fix.
    for module in (slack_bolt.request.async_request, slack_bolt.request.request):
        vars(module)["parse_body"] = parse_body
