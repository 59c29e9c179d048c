"""``deploybot``: the terminal transport. The Makefile calls it; it renders, the engine decides.

Exit codes (the contract): 0 done (``continue``: the paused deployment completed; with
``--rollback``: it rolled back); 1 the rollout failed, was rolled back or aborted; 2
refused before any change (bad input, lock held, frozen, needs approval, outside its
windows; or ECS proved the deployment never started: nothing changed); 3 still rolling out
when the timeout came; 4 lost sight of the rollout (AWS stopped answering; ECS may still be
rolling out, and the next ``deploybot status`` records what it did).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from bot.exit_codes import ExitCode

Handler = Callable[[argparse.Namespace], int]

MAX_HISTORY = 500  # the ledger reads at most this many records in one query
YES_HELP = "go on without asking (it asks only in a terminal, after showing what changes)"
DRY_RUN_HELP = (
    "show the plan (the task definition's diff from what runs, the checks of what the new "
    "revision needs, the rules' answer) and change nothing: exit 0 if it would start, 2 if not"
)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], ASCII digits only; argparse turns the
    ValueError into ``deploybot: error: …`` and exit 2 (refused, nothing changed)."""

    def parse(text: str) -> int:
        stripped = text.strip()
        digits = stripped.removeprefix("-")
        if not digits.isascii() or not digits.isdigit():
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number")
        # Compared as text first: int() of thousands of digits is slow, then refused anyway.
        value = int(stripped) if len(digits) <= 12 else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]} is not between {low} and {high}")
        return value

    return parse


def _release_tags(args: argparse.Namespace) -> int:
    from bot.tags import TagError, release_tags

    try:
        tags = release_tags(args.ref, args.sha, suffix=args.suffix)
    except TagError as exc:
        print(f"deploybot: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    print("\n".join(tags))
    return ExitCode.OK


def _engine_command(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        terminal = importlib.import_module("bot.terminal")
        handler: Handler = getattr(terminal, name)
        return handler(args)

    return run


def _continue(args: argparse.Namespace) -> int:
    from bot.terminal import continue_paused

    return continue_paused(args)


def _serve(args: argparse.Namespace) -> int:
    from bot.server import serve

    return serve(http=args.http, host=args.host, port=args.port)


def _notify(args: argparse.Namespace) -> int:
    from bot.slack.notify import notify_image_pushed

    return notify_image_pushed(
        tag=args.tag, sha=args.sha, run_url=args.run_url, config_parameter=args.config_parameter
    )


def _manifest(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from bot.settings import describe_errors, load_settings
    from bot.slack.manifest import render_manifest

    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"deploybot: bad configuration: {describe_errors(exc)}", file=sys.stderr)
        return ExitCode.REFUSED
    sys.stdout.write(render_manifest(settings.slack_commands))
    return ExitCode.OK


# What the playground needs beyond the bot: bot/local, and what pyproject.toml's `local`
# dependency group installs for it (moto's server). The bot's image has none of them; an
# install without the dev group (the wheel, `uv sync --no-dev`) has bot/local only.
PLAYGROUND_NEEDS = ("bot.local", "moto", "werkzeug", "flask")
NO_PLAYGROUND = (
    "deploybot: the playground is not in this installation (missing: {missing}): it needs "
    "bot/local and moto (pyproject.toml's `local` dependency group), which the production "
    "image leaves out. Run it from a checkout of the repository: make demo"
)


def _demo(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    # Asked before anything starts: the playground imports moto only once it is under way.
    missing = [name for name in PLAYGROUND_NEEDS if find_spec(name) is None]
    if missing:
        print(NO_PLAYGROUND.format(missing=", ".join(missing)), file=sys.stderr)
        return ExitCode.REFUSED
    from bot.local.playground import run_playground

    return run_playground(host=args.host, port=args.port)


def _change_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true", help="start the rollout and return")
    p.add_argument("--reason", default="", help="why, recorded with the deployment")
    p.add_argument("--yes", action="store_true", help=YES_HELP)
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.add_argument(
        "--break-glass",
        metavar="TEXT",
        default=None,
        help="go past the target's approvals, deploy windows and firing or missing alarms, "
        "saying why: recorded in the history and announced in the target's Slack channel",
    )


TARGET_HELP = (
    "the target (deploybot.toml's [targets.NAME]) the command acts on; default DEPLOY_TARGET. "
    "status and stats without it: every target"
)


def _target_option(p: argparse.ArgumentParser) -> None:
    """``--target`` after the command as well as before it (``deploybot history --target
    staging``); SUPPRESS keeps the one given before when none comes after."""
    p.add_argument("--target", metavar="NAME", default=argparse.SUPPRESS, help=TARGET_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploybot",
        description="Deploy the hello-world service to ECS Fargate, from Slack or from here.",
        epilog="Exit codes: 0 done, 1 failed, rolled back or aborted, 2 refused before any change "
        "(nothing changed), 3 still rolling out at the timeout, 4 lost sight of the rollout "
        "(AWS stopped answering; check `deploybot status`).",
    )
    parser.add_argument("--target", metavar="NAME", default=None, help=TARGET_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("deploy", help="deploy an image tag, with live progress")
    p.add_argument("tag", metavar="TAG", help="v4.4.0-ecr-ecs-fargate, v4.4, sha-abc1234, ...")
    _change_options(p)
    p.add_argument(
        "--allow-moved-tag",
        action="store_true",
        help="deploy an exact release tag even though it now names another image than the "
        "one deployed under it before (re-pushed on purpose)",
    )
    p.set_defaults(handler=_engine_command("deploy"))

    p = sub.add_parser("redeploy", help="force a new deployment of what runs now")
    _change_options(p)
    p.set_defaults(handler=_engine_command("redeploy"))

    p = sub.add_parser(
        "promote", help="deploy to TO the digest FROM's last deployment completed with"
    )
    p.add_argument("source", metavar="FROM", help="the target the image completed on")
    p.add_argument("to", metavar="TO", help="the target to deploy it to")
    _change_options(p)
    p.set_defaults(handler=_engine_command("promote"))

    p = sub.add_parser(
        "rollback", help="back to the newest release that completed and was not rolled back from"
    )
    p.add_argument("--no-wait", action="store_true", help="start the rollout and return")
    p.add_argument("--reason", default="", help="why, recorded with the deployment")
    p.add_argument("--yes", action="store_true", help=YES_HELP)
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.set_defaults(handler=_engine_command("rollback"))

    # `deploybot rollback` already goes back to the last good release (a new deployment):
    # rolling a paused deployment back is a decision on the pause, so `continue --rollback`.
    p = sub.add_parser(
        "continue",
        help="decide on the deployment ECS paused at a hook: continue it (an approval), or "
        "--rollback",
    )
    p.add_argument(
        "--rollback",
        action="store_true",
        help="roll the paused deployment back instead (ECS restores the previous revision)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once ECS took the decision")
    p.add_argument(
        "--yes",
        action="store_true",
        help=YES_HELP + "; also continues over a red check of the test listener",
    )
    p.add_argument(
        "--break-glass",
        metavar="TEXT",
        default=None,
        help="continue without the target's approval, saying why: recorded in the history "
        "and announced in the target's Slack channel",
    )
    p.set_defaults(handler=_continue)

    p = sub.add_parser("freeze", help="stop deploys to the target, saying why")
    p.add_argument("reason", metavar="TEXT", help='why, e.g. "incident 1234"')
    p.set_defaults(handler=_engine_command("freeze"))

    p = sub.add_parser("unfreeze", help="lift the target's freeze")
    p.set_defaults(handler=_engine_command("unfreeze"))

    p = sub.add_parser(
        "abort", help="stop the running rollout: put the previous task definition back"
    )
    p.set_defaults(handler=_engine_command("abort"))

    p = sub.add_parser("status", help="what runs, counts, rollout, lock, last deploys")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_engine_command("status"))

    p = sub.add_parser("history", help="recent deployments: who, what, outcome, duration")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print machine-readable JSON")
    shape.add_argument("--csv", action="store_true", help="print CSV (a header, a line a row)")
    p.add_argument(
        "--since",
        metavar="WHEN",
        default=None,
        help="every deployment since WHEN (2026-01-01, or 30d, 12w, 6m back from now), "
        "oldest first, instead of the last N: the export, with --csv or --json",
    )
    p.add_argument(
        "-n",
        type=bounded_int(1, MAX_HISTORY),
        default=10,
        metavar="N",
        help=f"how many, 1 to {MAX_HISTORY} (default 10)",
    )
    p.set_defaults(handler=_engine_command("history"))

    p = sub.add_parser(
        "stats",
        help="DORA's four keys: deployment frequency, lead time, change failure rate, "
        "time to restore",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        default="30d",
        help="the window: 30d, 12w, 6m back from now, or a date (2026-01-01); default 30d, "
        "at most 365 days",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print machine-readable JSON")
    shape.add_argument("--csv", action="store_true", help="print CSV (a line a target)")
    p.set_defaults(handler=_engine_command("stats"))

    p = sub.add_parser("unlock", help="break a stale lock, saying whose it was")
    p.set_defaults(handler=_engine_command("unlock"))

    for name in ("deploy", "redeploy", "rollback", "continue", "freeze", "unfreeze", "abort",
                 "status", "history", "stats", "unlock"):  # fmt: skip
        _target_option(sub.choices[name])

    p = sub.add_parser("notify", help="CI's notices to Slack")
    notify_sub = p.add_subparsers(dest="notice", metavar="NOTICE", required=True)
    n = notify_sub.add_parser("image-pushed", help="a new image is in ECR, with a Deploy button")
    n.add_argument("--tag", required=True, help="the image tag CI pushed")
    n.add_argument("--sha", default=None, help="the commit it was built from")
    n.add_argument("--run-url", default=None, help="link to the CI run")
    n.add_argument(
        "--config-parameter",
        metavar="NAME",
        default=None,
        help="the SSM parameter holding the targets (deploybot.toml), read when "
        "DEPLOYBOT_CONFIG and DEPLOYBOT_CONFIG_TEXT are unset: the bot's, "
        "/STACK_NAME-bot/deploybot.toml",
    )
    n.set_defaults(handler=_notify)

    p = sub.add_parser("release-tags", help="the image tags CI pushes, one a line")
    p.add_argument("--ref", required=True, help="git ref, e.g. refs/tags/v4.4.0-ecr-ecs-fargate")
    p.add_argument("--sha", required=True, help="the commit sha")
    p.add_argument("--suffix", default="-ecr-ecs-fargate", help=argparse.SUPPRESS)
    p.set_defaults(handler=_release_tags)

    p = sub.add_parser(
        "manifest",
        help="print the Slack app manifest for the configured command names (SLACK_*_COMMAND)",
    )
    p.set_defaults(handler=_manifest)

    p = sub.add_parser("serve", help="run the bot: Socket Mode, or HTTP mode with --http")
    p.add_argument("--http", action="store_true", help="serve POST /slack/events over HTTP")
    p.add_argument("--host", default="0.0.0.0", help="HTTP address (default 0.0.0.0)")
    p.add_argument(
        "--port", type=bounded_int(0, 65535), default=3000, help="HTTP port (default 3000)"
    )
    p.set_defaults(handler=_serve)

    p = sub.add_parser("demo", help="the local playground: moto, the Slack emulator, the bot")
    p.add_argument("--host", default="127.0.0.1", help="address of the page (default 127.0.0.1)")
    p.add_argument(
        "--port", type=bounded_int(0, 65535), default=8000, help="port of the page (default 8000)"
    )
    p.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
