"""The acks baselines: a Bolt AsyncApp that only acks, or (``--answer``) acks and answers once
on the response_url with a fixed text; on FastAPI + uvicorn like the bot."""

from __future__ import annotations

import argparse
import os

import uvicorn
from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

ANSWER = "deploybot is here. Try `/deploy help`."


def create(answer: bool = False) -> FastAPI:
    client = AsyncWebClient(
        token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]
    )
    bolt = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    async def only_ack(ack: AsyncAck) -> None:
        await ack()

    async def ack_and_answer(ack: AsyncAck, respond: AsyncRespond) -> None:
        # The least a useful bot does: the ack, then one answer on the response_url (the
        # listener runs on after ack(): process_before_response is False, as in the bot).
        await ack()
        await respond(text=ANSWER, response_type="ephemeral")

    for command in ("/deploy", "/redeploy", "/deploy-status"):
        bolt.command(command)(ack_and_answer if answer else only_ack)
    handler = AsyncSlackRequestHandler(bolt)
    api = FastAPI(docs_url=None, redoc_url=None)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/slack/events")
    async def events(request: Request) -> Response:
        return await handler.handle(request)

    return api


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", action="store_true", help="answer once on the response_url")
    args = parser.parse_args()
    uvicorn.run(
        create(args.answer), host="127.0.0.1", port=args.port, log_config=None, access_log=False
    )
