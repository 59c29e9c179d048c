"""Generated command texts through the real Slack path: every one answered, none writes to AWS.

The bot is ``deploybot serve --http`` (a child process); each text goes as a signed slash
command from the Slack emulator. Three kinds of sender, each its own (user, channel), so the
answers can be counted per kind:

- carol, not allowed to deploy, in #deploys: any text at all (tags that exist included);
- bob, allowed, in #random, a channel deploybot is not allowed in: any text;
- alice, allowed, in #deploys: texts that hold a character no image tag can hold.

None of them may start a deployment, so the check is exact: no AWS write at all, counted by
the moto server, and exactly one ephemeral answer per command, saying why.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.local.aws import MotoServer
from bot.local.slack_emulator import SlackEmulator
from tests.conftest import ALICE, BOB, CAROL, DEPLOYS, RANDOM, LocalStack
from tests.reliability.conftest import report
from tests.slack.conftest import BotFactory

pytestmark = pytest.mark.reliability

EXAMPLES = 2000
IN_FLIGHT = 4  # commands sent at once
WRITES = (
    ("ecs", "RegisterTaskDefinition"),
    ("ecs", "UpdateService"),
    ("dynamodb", "PutItem"),
    ("dynamodb", "UpdateItem"),
    ("dynamodb", "DeleteItem"),
)
READ_WORDS = ("", "help", "history", "status")
# No image tag holds any of these (tags are [A-Za-z0-9_.-]); each alice text has one.
NOT_IN_TAGS = ";|&$`<>()!*?[]{}'\"\\#~%^,:= é漢🚀\u200b\u202e"
REAL_TAGS = ["v4.4.0", "v4.5.0", "v4.4", "v4", "v4.4.0-ecr-ecs-fargate", "rollback", "help"]

any_text = st.one_of(
    st.text(max_size=80),
    st.text(min_size=500, max_size=4000),
    st.sampled_from(REAL_TAGS),
    st.builds(lambda a, b: f"{a} {b}", st.sampled_from(REAL_TAGS), st.text(max_size=40)),
    st.text(alphabet=st.sampled_from(list("v0123456789.-;|&$`<>(){}*?!'\" ")), max_size=60),
)
not_a_tag = st.builds(
    lambda head, bad, tail: f"{head}{bad}{tail}",
    st.one_of(st.sampled_from(REAL_TAGS), st.text(max_size=40)),
    st.sampled_from(list(NOT_IN_TAGS.replace(" ", ""))),
    st.one_of(st.text(max_size=40), st.text(min_size=200, max_size=2000)),
)
cases = st.one_of(
    st.tuples(st.just("carol"), st.sampled_from(["/deploy", "/redeploy"]), any_text),
    st.tuples(
        st.just("bob"), st.sampled_from(["/deploy", "/redeploy", "/deploy-status"]), any_text
    ),
    st.tuples(st.just("alice"), st.just("/deploy"), not_a_tag),
)
SENDERS = {"carol": (CAROL, DEPLOYS), "bob": (BOB, RANDOM), "alice": (ALICE, DEPLOYS)}


def expected_words(kind: str, command: str, text: str) -> tuple[str, ...] | None:
    """What the answer must say (one of), or None when any answer will do (help, status)."""
    if kind == "bob":
        return ("is not handled in this channel",)
    if kind == "alice":
        return ("is not an image tag", "image tags have at most 128")
    if command == "/deploy" and text.strip().lower() in READ_WORDS:
        return None
    return ("you may not", "no target named")  # deploy, redeploy, roll back; or "TAG to X"


def test_generated_texts_are_answered_and_never_write(
    stack: LocalStack, aws: MotoServer, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http", DEPLOY_ALLOWED_CHANNELS=DEPLOYS)
    aws.requests.clear()
    sent: list[tuple[str, str, str]] = []
    crashes: list[str] = []
    started = time.monotonic()

    def deliver(case: tuple[str, str, str]) -> None:
        kind, command, text = case
        user, channel = SENDERS[kind]
        delivery = emulator.slash_command(
            command, text, user=user, channel=channel, url=bot.events_url
        )
        if delivery.status == 200:
            sent.append(case)
        else:  # Slack would show the user "dispatch_failed"
            crashes.append(f"{kind} {command} {text!r}: {delivery.status} {delivery.error}")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases)
    def send(case: tuple[str, str, str]) -> None:
        pending.append(commands.submit(deliver, case))

    # A few commands in flight at once, as Slack sends them (people do not wait for each
    # other's answers): the texts are generated while earlier ones are being answered.
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(IN_FLIGHT) as commands:
        send()
    for done in pending:
        done.result()  # an emulator's error (no ack in time) fails the test, as sent one by one
    acked = time.monotonic() - started

    def all_answered() -> bool:
        return len(emulator.ephemerals()) >= len(sent)

    try:
        emulator.wait_for(all_answered, timeout=60, what=f"{len(sent)} answers")
    except TimeoutError:  # say which kind went unanswered, and what the bot logged
        for kind, (user, channel) in SENDERS.items():
            got = len(emulator.ephemerals(user=user, channel=channel))
            print(f"{kind}: {sum(1 for c in sent if c[0] == kind)} acked, {got} answered")
        print(bot.output()[-5000:])
        raise
    took = time.monotonic() - started
    for kind, (user, channel) in SENDERS.items():
        mine = [c for c in sent if c[0] == kind]
        answers = emulator.ephemerals(user=user, channel=channel)
        assert len(answers) == len(mine), kind
        musts = [w for w in (expected_words(*c) for c in mine) if w]
        for words in set(musts):
            saying = [a for a in answers if any(w in a.all_text for w in words)]
            others = [a.all_text[:300] for a in answers if a not in saying]
            assert len(saying) == musts.count(words), (kind, words, others[:5])
    texts = [a.all_text for a in emulator.ephemerals()]
    crashes += [t[:200] for t in texts if "went wrong" in t or "Traceback" in t]
    writes = sum(aws.requests.count(s, o) for s, o in WRITES)
    assert bot.proc is not None and bot.proc.poll() is None, "the bot died"
    assert "Traceback" not in bot.output()
    assert [m for m in emulator.messages(DEPLOYS) if m.bot_id] == []
    report(
        "generated texts",
        texts=len(sent) + len(crashes),
        crashes=len(crashes),
        **{"writes on rejects": writes, "answers": len(texts)},
        **{f"from {k}": sum(1 for c in sent if c[0] == k) for k in SENDERS},
        **{"longest text": max(len(c[2]) for c in sent), "s to send": round(acked, 1)},
        **{"s to all answers": round(took, 1)},
    )
    assert crashes == []
    assert writes == 0
    assert len(sent) >= EXAMPLES


def test_a_text_saying_payload_is_answered(
    stack: LocalStack, aws: MotoServer, emulator: SlackEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot("http")
    delivery = emulator.slash_command(
        "/deploy", "the payload", user=ALICE, channel=DEPLOYS, url=bot.events_url
    )
    # slack_bolt alone reads a form body containing "payload" as an interactivity payload and
    # answers 404; bot/slack/bolt_fixes.py mends that.
    assert delivery.status == 200
    answer = emulator.wait_for(lambda: emulator.ephemerals(user=ALICE), what="an answer")[0]
    assert "`the payload` is not an image tag" in answer.text
