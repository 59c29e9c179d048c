"""The terminal side of ``deploybot``: runs engine commands and renders them with rich."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table
from rich.text import Text

from bot.deploy.changes import commit_text, render_text
from bot.deploy.engine import Engine
from bot.deploy.events import BreakGlassUsed
from bot.deploy.pausing import CONTINUE, ROLLBACK, ConfirmWrongRelease, Pause
from bot.deploy.plan_diff import text_lines as plan_text_lines
from bot.deploy.progressive import Shift, StepClock
from bot.deploy.records import DeploymentRecord, ImageInfo, News, Plan, Requester, Status, Via
from bot.deploy.rollout import Outcome, Snapshot, revision_of
from bot.deploy.stats import (
    BANDS_REPORT,
    SOURCE_COMMITS,
    FourKeys,
    as_json,
    frequency_text,
    parse_since,
    rate_text,
    span_text,
)
from bot.deploy.verifying import baking, fired_alarms, progress_lines, triggered_alarms
from bot.errors import DeployError
from bot.exit_codes import ExitCode
from bot.fleet import Ask, Fleet, TargetStatus
from bot.hints import Hints
from bot.rules import Action, Door
from bot.settings import Settings, describe_errors, load_settings
from bot.target import Target

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _t(value: object) -> str:
    """Text from users, ECS or AWS, safe inside rich markup: ``[/x]`` prints as ``[/x]``."""
    return escape(str(value))


def requester(engine: Engine | None = None) -> Requester:
    """Who runs the command: DEPLOYBOT_USER, else user@host (declared, not proven); with
    ``engine``, beside it who AWS says the credentials are (STS, once per process)."""
    who = os.environ.get("DEPLOYBOT_USER") or f"{getpass.getuser()}@{socket.gethostname()}"
    arn = engine.aws.caller_arn() if engine is not None else ""
    return Requester(who=who, source="cli", aws_identity=arn)


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        raise DeployError(f"Bad configuration: {describe_errors(exc)}") from None


def _plain_off_a_terminal() -> None:
    """Off a terminal (a pipe, a file, CI's log) every line prints whole: rich wraps at the
    console's width (80 columns without one) unless told to soft-wrap."""
    out.soft_wrap = not out.is_terminal
    err.soft_wrap = not err.is_terminal


def _print_table(table: Table) -> None:
    """``table`` as rich draws it in a terminal; elsewhere as complete, unpadded lines (its
    title, then the header and one line a row, cells apart by a tab, a cell's lines by " · "),
    so that a pipe, a file or CI's log never gets "d-20261…" or "comple…"."""
    if out.is_terminal:
        out.print(table)
        return

    def plain(cell: object) -> str:
        text = Text.from_markup(cell) if isinstance(cell, str) else Text(str(cell))
        return " · ".join(part.strip() for part in text.plain.splitlines() if part.strip())

    lines = [plain(table.title)] if table.title else []
    lines.append("\t".join(plain(column.header) for column in table.columns))
    rows = zip(*(list(column.cells) for column in table.columns), strict=True)
    lines += ["\t".join(plain(cell) for cell in row) for row in rows]
    out.file.write("\n".join(lines) + "\n")


def _quiet_logs() -> None:
    """In a terminal the command prints what a person needs (stopped tasks, notes, the
    outcome); the engine's log records are the bot's operational log. Without a handler,
    Python prints every WARNING raw on stderr (logging.lastResort): each stopped task came
    twice ("task stopped: …" beside "! task … stopped: …"), abort told of follower leases.
    Errors, the unexpected, still show."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.ERROR)
        handler.setFormatter(logging.Formatter("deploybot: %(message)s"))
        root.addHandler(handler)


def _run_fleet(args: argparse.Namespace, body: Callable[[Fleet, Target], int]) -> int:
    """Run ``body`` with the fleet and the target ``--target`` names (default DEPLOY_TARGET);
    a refusal (an unknown target, a rule, bad configuration) is printed, exit 2."""
    _plain_off_a_terminal()
    fleet: Fleet | None = None
    _quiet_logs()
    try:
        fleet = Fleet(_settings())
        fleet.speak(Hints.terminal_door())
        return body(fleet, fleet.target(getattr(args, "target", None)))
    except DeployError as exc:
        err.print(f"[bold red]✗[/] {_t(exc.message)}")
        return exc.exit_code
    finally:
        if fleet is not None:
            fleet.close()


def _run(args: argparse.Namespace, body: Callable[[Engine], int]) -> int:
    """``body`` on the engine of the target ``--target`` names."""
    return _run_fleet(args, lambda fleet, target: body(fleet.engine(target)))


def _ask(args: argparse.Namespace) -> Ask:
    ask = Ask.at(
        Door.CLI,
        requester(),  # the AWS identity is asked once the change starts (Engine.start)
        None,
        getattr(args, "break_glass", None),
        allow_moved_tag="any" if getattr(args, "allow_moved_tag", False) else "",
    )
    if getattr(args, "dry_run", False):
        # A dry run shows the plan even when the change needs approval (as a request's plan
        # is made); it says so, and starts nothing either way.
        return Ask.through(ask.requester, replace(ask.via, asking=True))
    return ask


def _image_text(commit: str | None, digest: str) -> str:
    """`` (abc1234, sha256:…)``: the commit ("no sha tag" said plainly) and the digest."""
    parts = [p for p in (commit_text(commit), digest) if p]
    return f" ({_t(', '.join(parts))})" if parts else ""


def _started_line(record: DeploymentRecord) -> str:
    digest = _image_text(record.commit, record.short_digest if record.digest else "")
    return (
        f"[bold]{_t(record.tag)}[/]{digest} to {_t(record.service)} "
        f"({_t(record.kind)} {_t(record.id)}, {_t(revision_of(record.task_definition))}, "
        f"ECS {_t(record.ecs_deployment_id or '?')})"
    )


def rollout_progress(console: Console) -> Progress:
    """A rollout's live bar: tasks running of desired. Green as it fills: rich's default
    for a bar under way is pink-red (its theme's ``bar.complete``, rgb(249,38,114)), which
    reads as a failure while all is well; failures are said in lines of their own."""
    return Progress(
        TextColumn("[bold]{task.fields[state]}[/]"),
        BarColumn(complete_style="green", finished_style="bold green"),
        TextColumn("{task.completed:.0f}/{task.total:.0f} running, {task.fields[pending]} pending"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def follow(engine: Engine, record: DeploymentRecord) -> int:
    """Live progress until the outcome; Ctrl-C stops watching, not the deployment."""
    verb = {"redeploy": "Redeploying", "rollback": "Rolling back to"}.get(record.kind, "Deploying")
    out.print(f"{verb} {_started_line(record)}")
    if record.start_error:
        err.print(f"[yellow]![/] {_t(record.start_error)}.")
    watch = engine.watch(record)
    progress = rollout_progress(out)
    final: Snapshot | None = None
    note = record.start_error
    ecs = _EcsSaid(engine)
    traffic = TrafficLines(engine, record)
    try:
        with progress:
            bar = progress.add_task("rollout", total=1, state="STARTING", pending=0)
            for snap in watch:
                if snap.note and snap.note != note:
                    progress.console.print(f"  [yellow]![/] {_t(snap.note)}")
                note = snap.note
                for line in ecs.new_lines(snap):
                    progress.console.print(f"  [cyan]{_t(line)}[/]")
                for line in traffic.lines(snap):
                    progress.console.print(line, soft_wrap=True)
                for event in snap.new_events:
                    progress.console.print(
                        f"  [dim]{event.created_at:%H:%M:%S}[/] {_t(event.message)}"
                    )
                for task in snap.stopped_tasks:
                    progress.console.print(f"  [yellow]![/] {_t(task.describe())}")
                    for name, url in (("logs", task.log_url), ("task", task.task_url)):
                        if url:
                            progress.console.print(f"      {name}: {_t(url)}", soft_wrap=True)
                progress.update(
                    bar,
                    total=max(snap.desired, 1),
                    completed=snap.running,
                    state=_t(snap.rollout_state or "IN_PROGRESS"),
                    pending=snap.pending,
                )
                final = snap
    except KeyboardInterrupt:
        watch.close()
        err.print(
            f"Stopped watching. Deployment {_t(record.id)} goes on in ECS; "
            f"`{_t(_status_hint(engine))}` shows how it is doing."
        )
        return ExitCode.INTERRUPTED
    assert final is not None and final.outcome is not None
    code = _print_outcome(record, final, _status_hint(engine), engine.aws.region, ecs.went_off)
    if final.outcome in (Outcome.ROLLED_BACK, Outcome.FAILED) and (reached := traffic.reached()):
        out.print(f"  reached {_t(reached)} before it ended.")
    if final.outcome != Outcome.COMPLETED:
        _print_where_to_look(final, engine.console_url)
    return code


class _EcsSaid:
    """What ECS's service deployment says while a terminal follows it (bot/deploy/
    verifying.py), each line printed when it changes; when each alarm that failed it went
    to ALARM, asked of CloudWatch once while it was (best effort)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.went_off: dict[str, datetime] = {}
        self.bake_seen: datetime | None = None
        self.said: set[str] = set()
        self.asked: set[str] = set()

    def new_lines(self, snap: Snapshot) -> list[str]:
        sd = snap.service_deployment
        if not sd or snap.final:
            return []
        if self.bake_seen is None and baking(sd):
            self.bake_seen = snap.at
        fired = [n for n in triggered_alarms(sd) if n not in self.asked]
        if fired:
            self.asked.update(fired)
            try:
                views = self.engine.alarms_now(fired)
            except DeployError:
                views = []  # said with ECS's rollback time instead
            self.went_off.update({v.name: v.since for v in views if v.state == "ALARM" and v.since})
        region = self.engine.aws.region
        lines = progress_lines(
            sd, snap.at, region, seen_since=self.bake_seen, went_off=self.went_off
        )
        # Seconds of the bake are for a live message; a terminal's lines say each minute once.
        keys = {line: re.sub(r"\b\d+ s\b", "s", line) for line in lines}
        fresh = [line for line in lines if keys[line] not in self.said]
        self.said.update(keys[line] for line in fresh)
        return fresh


def _print_where_to_look(snap: Snapshot, console_url: str) -> None:
    """The same links a failure's Slack message carries, whole (a terminal links them)."""
    if snap.log_url:
        out.print(f"  logs of the last stopped task: {_t(snap.log_url)}", soft_wrap=True)
    out.print(f"  deployments in the ECS console: {_t(console_url)}", soft_wrap=True)


def _status_hint(engine: Engine) -> str:
    """The status command of ``engine``'s target, as this door spells it."""
    return engine.hints.status(engine.target.name)


def _print_outcome(
    record: DeploymentRecord,
    snap: Snapshot,
    status: str,
    region: str = "",
    went_off: dict[str, datetime] | None = None,
) -> int:
    """The outcome's line; ``status``: the command that shows the target's status;
    ``region``, ``went_off``: the console links of the alarms that failed it, and when each
    went to ALARM."""
    outcome = snap.outcome
    assert outcome is not None
    took = f"{snap.elapsed:.0f} s"
    reason = _t(snap.outcome_reason.rstrip("."))
    tag, service = _t(record.tag), _t(record.service)
    what = {"redeploy": f"Redeploy of {tag}", "rollback": f"Rollback to {tag}"}.get(
        record.kind, f"Deployment of {tag}"
    )
    fired = fired_alarms(snap.service_deployment or {}, region, went_off)
    if fired and outcome in (Outcome.ROLLED_BACK, Outcome.FAILED):
        # ECS failed it for its alarms (#26): which, since when, and where to see them.
        verb = "rolled back" if outcome == Outcome.ROLLED_BACK else "stopped"
        said = "; ".join(_t(f.text()) for f in fired)
        out.print(f"[bold red]✗ {what} failed[/] after {took}: {verb}: {said}.")
        if outcome == Outcome.ROLLED_BACK:
            back = _t(snap.rollback_tag or revision_of(snap.rollback_task_definition))
            out.print(f"  ECS rolled the service back to {back}. {tag} is NOT running.")
        for f in fired:
            out.print(f"  alarm {_t(f.name)} in the console: {_t(f.url)}", soft_wrap=True)
        return outcome.exit_code
    if outcome == Outcome.COMPLETED:
        # A rollback says where it went back to, never "Deployed".
        done = {"redeploy": "Redeployed", "rollback": "Rolled back to"}.get(record.kind)
        out.print(
            f"[bold green]✓ {done or 'Deployed'} {tag}[/] "
            f"{'on' if record.kind == 'rollback' else 'to'} {service} in {took} "
            f"({snap.running}/{snap.desired} tasks running)."
        )
    elif outcome == Outcome.ROLLED_BACK:
        back = _t(snap.rollback_tag or revision_of(snap.rollback_task_definition))
        out.print(
            f"[bold red]✗ {what} failed[/] after {took}: {reason}."
            f"\n  ECS's circuit breaker rolled the service back to {back} "
            f"(deployment {_t(snap.rollback_deployment)}). {tag} is NOT running."
        )
    elif outcome == Outcome.FAILED:
        out.print(f"[bold red]✗ {what} failed[/] after {took}: {reason}.")
    elif outcome == Outcome.REPLACED:
        out.print(f"[bold yellow]⏭ {what} was {reason}[/] after {took}.")
    elif outcome == Outcome.ABORTED:
        out.print(f"[bold red]✗ {what} aborted[/] after {took}: {reason}.")
    elif outcome == Outcome.NOT_STARTED:
        out.print(f"[bold red]✗ {tag} was not deployed[/]: {reason}.")
    elif outcome == Outcome.UNKNOWN:
        out.print(
            f"[bold yellow]? Lost sight of the rollout of {tag}[/] after {took}: {reason}. "
            f"ECS may still be rolling out; deployment {_t(record.id)} stays open and keeps "
            f"the lock until `{_t(status)}` (or any command that reaches AWS) records what "
            "ECS did."
        )
    else:
        out.print(
            f"[bold yellow]… {tag} is still rolling out[/] after {took} "
            f"({snap.running}/{snap.desired} running). ECS carries on, and deployment "
            f"{_t(record.id)} keeps the lock until ECS ends it: `{_t(status)}` shows how it "
            "goes; abort stops it."
        )
    return outcome.exit_code


def print_change(plan: Plan) -> None:
    """What the plan changes, before anything is: direction, compare link, commits; the task
    definition's diff from what runs and the checks of what the new revision needs."""
    if plan.change is None:
        out.print("What it changes is not known: ECR's list of images could not be read.")
    else:
        out.print(_t(render_text(plan.change)), soft_wrap=True)
    if plan.task is not None:
        out.print(_t("\n".join(plan_text_lines(plan.task))), soft_wrap=True)


def go_on(args: argparse.Namespace, plan: Plan) -> bool:
    """Ask before changing anything, in a terminal and without --yes; elsewhere (CI, make
    in a script, a pipe) there is nobody to ask: go on."""
    if getattr(args, "yes", False) or not sys.stdin.isatty():
        return True
    verb = {"redeploy": "Redeploy", "rollback": "Roll back to", "promote": "Promote"}.get(
        plan.kind, "Deploy"
    )
    question = f"{verb} {_t(plan.tag)} on {_t(plan.service)}?"
    try:
        return Confirm.ask(question, console=out, default=False)
    except EOFError:
        return False


def _start(
    args: argparse.Namespace, plan: Callable[[Fleet, Target], Plan], target: str | None = None
) -> int:
    """Plan through the rules (``target``: the one the command names, else --target's),
    show what it changes, ask (in a terminal, without --yes), then start, and follow unless
    --no-wait."""

    def body(fleet: Fleet, chosen: Target) -> int:
        if target is not None:
            chosen = fleet.target(target)
        engine = fleet.engine(chosen)
        planned = plan(fleet, chosen)
        for note in planned.notes:
            err.print(f"[yellow]![/] {_t(note)}")
        print_change(planned)
        if getattr(args, "dry_run", False):
            return _dry_run_end(planned)
        if not go_on(args, planned):
            err.print("Not started: nothing was changed.")
            return ExitCode.REFUSED
        supervisor = fleet.supervisor(chosen)
        # A bypassed rule is recorded for the target's channel (the supervisor's); said here.
        heard = supervisor.events.subscribe(
            BreakGlassUsed, lambda used: said(used.news.kind, chosen.name, used.unrecorded)
        )
        try:
            record = supervisor.start(planned, follow=not args.no_wait)
        finally:
            heard()
        if args.no_wait and record.outcome is Outcome.NOT_STARTED:
            # UpdateService's answer was lost and ECS proved it never started (#31).
            out.print(
                f"[bold red]✗ {_t(record.tag)} was not deployed[/]: {_t(record.outcome_reason)}."
            )
            return ExitCode.REFUSED
        if args.no_wait:
            out.print(f"Started {_t(record.kind)} of {_started_line(record)}.")
            if record.start_error:
                err.print(f"[yellow]![/] {_t(record.start_error.removesuffix('; following it'))}.")
            out.print(
                f"`{_t(_status_hint(engine))}` shows how it goes and records its outcome once "
                "ECS is done."
            )
            return ExitCode.OK
        return follow(engine, record)

    return _run_fleet(args, body)


def _dry_run_end(plan: Plan) -> int:
    """``--dry-run``: what a start would do, and nothing done. A change that needs approval is
    planned as a request would be (``_ask``), and said: from here it would be refused."""
    if plan.decision.needs_approval and not plan.decision.allowed:
        err.print(f"[yellow]![/] Would be refused: {_t(plan.decision.message)}")
        out.print("Dry run: nothing was changed.")
        return ExitCode.REFUSED
    out.print("Dry run: nothing was changed. Without --dry-run this would start now.")
    return ExitCode.OK


def deploy(args: argparse.Namespace) -> int:
    return _start(
        args,
        lambda fleet, target: fleet.plan(
            target,
            Action.DEPLOY,
            _ask(args),
            tag=args.tag,
            reason=args.reason,
        ),
    )


def redeploy(args: argparse.Namespace) -> int:
    return _start(
        args,
        lambda fleet, target: fleet.plan(target, Action.REDEPLOY, _ask(args), reason=args.reason),
    )


def rollback(args: argparse.Namespace) -> int:
    return _start(
        args,
        lambda fleet, target: fleet.plan(target, Action.ROLLBACK, _ask(args), reason=args.reason),
    )


def promote(args: argparse.Namespace) -> int:
    """``promote FROM TO``: deploy to TO the digest FROM's last deployment completed with."""
    named = getattr(args, "target", None)
    if named is not None and named != args.to:
        err.print(
            f"[bold red]✗[/] promote names its targets (FROM {_t(args.source)}, TO "
            f"{_t(args.to)}); drop --target {_t(named)}. Nothing was changed."
        )
        return ExitCode.REFUSED
    return _start(
        args,
        lambda fleet, target: fleet.plan(
            target,
            Action.PROMOTE,
            _ask(args),
            source=args.source,
            reason=args.reason,
        ),
        target=args.to,
    )


def said(kind: str, target: str, unrecorded: str = "") -> None:
    """What this terminal did (a freeze, a break-glass...) is recorded for the bot to say in
    the target's channel (no Slack token here), or why it could not be."""
    if unrecorded:
        err.print(f"[yellow]![/] Not recorded for the Slack channel: {_t(unrecorded)}")
    else:
        out.print(f"[dim]The bot announces the {_t(kind)} in {_t(target)}'s channel.[/]")


def tell_channel(engine: Engine, news: News) -> None:
    """Record what this terminal did for the bot to announce in the target's channel."""
    try:
        engine.tell_channel(news)
    except DeployError as exc:
        return said(news.kind, engine.target.name, exc.message)
    said(news.kind, engine.target.name)


def _via(args: argparse.Namespace) -> Via:
    return Via(door=Door.CLI, break_glass=getattr(args, "break_glass", None))


def freeze(args: argparse.Namespace) -> int:
    def body(engine: Engine) -> int:
        who = requester(engine)
        frozen = engine.freeze(who, args.reason, via=_via(args))
        out.print(
            f"[bold]{_t(engine.target.name)} is frozen[/]: {_t(frozen.reason)}. Deploys, "
            "redeploys and promotions are refused until "
            f"`{_t(engine.hints.unfreeze(engine.target.name))}`; rollback and abort still work."
        )
        tell_channel(
            engine,
            News("freeze", who.name, frozen.since, who.aws_identity, reason=frozen.reason),
        )
        return ExitCode.OK

    return _run(args, body)


def unfreeze(args: argparse.Namespace) -> int:
    def body(engine: Engine) -> int:
        who = requester(engine)
        lifted = engine.unfreeze(who, via=_via(args))
        was = f"frozen by {lifted.by} since {lifted.since:%Y-%m-%d %H:%M} UTC: {lifted.reason}"
        out.print(f"[bold]{_t(engine.target.name)} is no longer frozen[/] ({_t(was)}).")
        tell_channel(
            engine, News("unfreeze", who.name, engine.clock.now(), who.aws_identity, reason=was)
        )
        return ExitCode.OK

    return _run(args, body)


def abort(args: argparse.Namespace) -> int:
    """Stop the rollout; follow the previous task definition back. 0 once it is back."""

    def body(engine: Engine) -> int:
        who = requester(engine)
        record = engine.abort(who, via=_via(args))
        back = record.previous_tag or revision_of(record.previous_task_definition)
        out.print(
            f"Aborting {_t(record.kind)} {_t(record.id)} of [bold]{_t(record.tag)}[/] "
            f"(by {_t(record.who_display or record.who)}): putting {_t(back)} back"
            + (f" ({_t(record.abort_how)})." if record.abort_how else ".")
        )
        tell_channel(
            engine,
            News(
                "abort",
                who.name,
                record.aborted_at or engine.clock.now(),
                who.aws_identity,
                deployment_id=record.id,
                tag=record.tag,
                detail=back,
            ),
        )
        # Its own short watch (Engine.follow_abort): ECS read from now, its own timeout,
        # whoever follows the aborted deployment (its process may be dead).
        with out.status("putting it back…"):
            outcome, why = engine.follow_abort(record)
        if outcome is None:
            waited = engine.settings.rollout_timeout_seconds
            if why:
                out.print(
                    f"[bold yellow]? Lost sight of the restore of {_t(back)}[/] after "
                    f"{waited:.0f} s: {_t(why)}. The lock stays held; "
                    f"`{_t(_status_hint(engine))}` shows how it goes and records the outcome."
                )
                return ExitCode.LOST
            out.print(
                f"[bold yellow]… still putting {_t(back)} back[/] after {waited:.0f} s. ECS "
                "carries on; the lock stays held until it is done. "
                f"`{_t(_status_hint(engine))}` shows how it goes."
            )
            return ExitCode.STILL_ROLLING_OUT
        if outcome == Outcome.ABORTED and why.endswith(" is back"):
            out.print(f"[bold green]✓ Aborted[/]: {_t(back)} is back.")
            return ExitCode.OK
        out.print(f"[bold red]✗ {_t(outcome.label)}[/]: {_t(why)}.")
        # Proven never started (its UpdateService never reached ECS): nothing changed, 2.
        return outcome.exit_code if outcome is Outcome.NOT_STARTED else ExitCode.FAILED

    return _run(args, body)


def _record_json(record: DeploymentRecord) -> dict[str, Any]:
    data = asdict(record)
    for key in ("started_at", "finished_at"):
        data[key] = data[key].isoformat() if data[key] else None
    data["duration"] = record.duration
    return data


def status_json(status: Status) -> dict[str, Any]:
    return {
        "cluster": status.cluster,
        "service": status.service,
        "tag": status.tag,
        "digest": status.digest,
        "commit": status.commit,
        "image": status.image,
        "task_definition": status.task_definition,
        "revision": status.revision,
        "desired": status.desired,
        "running": status.running,
        "pending": status.pending,
        "rollout": asdict(status.rollout) if status.rollout else None,
        "tasks": [asdict(t) for t in status.tasks],  # by release: old and new apart
        "lock": {
            "holder": status.lock.holder,
            "tag": status.lock.tag,
            "deployment_id": status.lock.deployment_id,
            "since": status.lock.acquired_at.isoformat(),
        }
        if status.lock
        else None,
        "recent": [_record_json(r) for r in status.recent],
        "freeze": {
            "by": status.freeze.by,
            "since": status.freeze.since.isoformat(),
            "reason": status.freeze.reason,
            "deployment": status.freeze.deployment,
        }
        if status.freeze
        else None,
        "queue": [
            {
                "id": q.id,
                "mode": q.mode.value,
                "kind": q.kind,
                "tag": q.tag,
                "who": q.requester.who,
                "queued_at": q.queued_at.isoformat(),
            }
            for q in status.queue
        ],
    }


def _recent_images(engine: Engine) -> tuple[list[ImageInfo], str]:
    """The release images in ECR, newest first, or why they could not be listed: status
    still answers what runs when ECR cannot be read."""
    try:
        return engine.recent_images(5), ""
    except DeployError as exc:
        return [], exc.message


def status(args: argparse.Namespace) -> int:
    def body(engine: Engine) -> int:
        st = engine.status()
        images, images_error = _recent_images(engine)
        if args.json:
            data = status_json(st)
            data["recent_images"] = [
                {"tags": list(i.tags), "pushed_at": i.pushed_at, "digest": i.digest} for i in images
            ]
            print(json.dumps(data, default=str, indent=2))
            return ExitCode.OK
        digest = f"{_t(st.short_digest)}, " if st.digest else ""
        if commit := commit_text(st.commit):
            digest = f"{_t(commit)}, {digest}"
        # During a rollout the service's task definition is the release it goes to, while
        # the old one may still run every task: the header says which.
        going = "rolling out " if st.mixed else ""
        out.print(
            f"[bold]{_t(st.service)}[/] on {_t(st.cluster)}: {going}[bold]{_t(st.tag)}[/] "
            f"({digest}{_t(st.revision)})"
        )
        by = st.deployed_by
        out.print(
            f"  deployed by: {_t(by.who_display or by.who)}"
            + (f" (AWS {_t(by.who_arn)})" if by.who_arn else "")
            + f" ({_t(by.kind)} {_t(by.id)}, "
            f"{by.started_at:%Y-%m-%d %H:%M} UTC)"
            if by
            else "  deployed by: outside deploybot"
        )
        out.print(f"  tasks: {_t(st.tasks_text())}")
        if st.rollout:
            out.print(
                f"  rollout: {_t(st.rollout.rollout_state or 'IN_PROGRESS')} "
                f"{st.rollout.running}/{st.rollout.desired} ({_t(st.rollout.id)})"
            )
        else:
            out.print("  rollout: none in progress")
        out.print(f"  lock: {_t(st.lock.describe()) if st.lock else 'free'}")
        if st.freeze:
            f = st.freeze
            out.print(
                f"  [bold red]frozen[/] by {_t(f.by)} since {f.since:%Y-%m-%d %H:%M} UTC: "
                f"{_t(f.reason)}"
            )
        for place, item in enumerate(st.queue, 1):
            what = f"{item.kind} {item.tag}".strip() if item.kind else "tell when free"
            out.print(f"  queued {place}: {_t(what)} by {_t(item.requester.name)}")
        if st.recent:
            _print_table(_history_table(list(st.recent), "Last deployments"))
        if images_error:
            out.print(f"  recent images in ECR: not listed ({_t(images_error)})")
        elif images:
            deploy = engine.hints.deploy(engine.target.name, "…")
            out.print(f"Recent images in ECR ({_t(deploy)}):")
            for image in images:
                pushed = f"  pushed {image.pushed_at:%Y-%m-%d %H:%M} UTC" if image.pushed_at else ""
                sha = next((t for t in image.tags if t.startswith("sha-")), "")
                commit = sha.removeprefix("sha-")[:7] or "no sha tag"
                out.print(f"  {_t(image.tags[0])} ({_t(commit)}){pushed}")
        else:
            out.print("  recent images in ECR: none")
        return ExitCode.OK

    return _run_fleet(args, _status_fleet(args, body))


def _all_targets(args: argparse.Namespace) -> bool:
    """``status`` without --target shows every target (the detail where there is just one)."""
    return getattr(args, "target", None) is None


def _status_fleet(
    args: argparse.Namespace, detail: Callable[[Engine], int]
) -> Callable[[Fleet, Target], int]:
    def body(fleet: Fleet, target: Target) -> int:
        if _all_targets(args) and len(fleet.targets) > 1:
            return _status_of_all(args, fleet)
        return detail(fleet.engine(target))

    return body


def _status_of_all(args: argparse.Namespace, fleet: Fleet) -> int:
    """Every target in one table: one DescribeServices per cluster per ten services."""
    rows = fleet.statuses()
    if args.json:
        data = {
            "targets": [
                {"target": row.target.name, "error": row.error or None}
                | (status_json(row.status) if row.status else {})
                for row in rows
            ]
        }
        print(json.dumps(data, default=str, indent=2))
        return ExitCode.OK if all(row.status for row in rows) else ExitCode.REFUSED
    _print_table(_targets_table(rows, fleet.targets.default_name))
    out.print(f"Detail: {_t(fleet.hints.status('NAME'))}")
    return ExitCode.OK if all(row.status for row in rows) else ExitCode.REFUSED


def _targets_table(rows: list[TargetStatus], default: str) -> Table:
    table = Table(title="Targets", title_justify="left")
    for column in ("target", "service", "tag (digest)", "tasks", "rollout", "lock"):
        table.add_column(column)
    for row in rows:
        name = _t(row.target.name) + (" [dim](default)[/]" if row.target.name == default else "")
        if row.target.after:
            name += f"\n[dim]after {_t(row.target.after)}[/]"
        service = f"{_t(row.target.cluster)}/{_t(row.target.service)}"
        st = row.status
        if st is None:
            table.add_row(name, service, f"[red]not read[/]: {_t(row.error)}", "", "", "")
            continue
        rollout = (
            f"{_t(st.rollout.rollout_state or 'IN_PROGRESS')} {st.rollout.running}/"
            f"{st.rollout.desired}"
            if st.rollout
            else "none"
        )
        table.add_row(
            name,
            service,
            _t(st.tag) + (f"\n{_t(st.short_digest)}" if st.digest else ""),
            _t("\n".join(t.describe() for t in st.tasks))
            if st.mixed
            else f"{st.running}/{st.desired}" + (f", {st.pending} pending" if st.pending else ""),
            rollout,
            (_t(st.lock.describe()) if st.lock else "free")
            + (f"\n[bold red]frozen[/]: {_t(st.freeze.reason)}" if st.freeze else "")
            + (f"\n{len(st.queue)} queued" if st.queue else ""),
        )
    return table


def _history_table(records: list[DeploymentRecord], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("started (UTC)", "id", "kind", "tag (digest)", "who", "from", "outcome", "took"):
        table.add_column(column)
    for r in records:
        took = f"{r.duration:.0f} s" if r.duration is not None else "-"
        # Table cells are rich markup too: a name like "[/b]" must print as it is.
        table.add_row(
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            _t(r.id),
            _t(r.kind),
            # The digest under the tag: no column of its own, so narrow terminals keep room.
            _t(r.tag) + _history_image(r),
            _t(r.who_display or r.who)
            + (f"\n[dim]{_t(r.who_arn)}[/]" if r.who_arn else "")
            + (f"\napproved by {_t(', '.join(r.approved_by))}" if r.approved_by else "")
            + ("\n[red]break-glass[/]" if r.break_glass else ""),
            _t(r.source),
            # ECS's own word beside deploybot's (#26): its service deployment's status.
            _t(r.outcome_text)
            + (f"\n[dim]ECS: {_t(r.ecs_status)}[/]" if r.ecs_status else "")
            # Who pressed Continue or Roll back at ECS's pauses (#27), and when.
            + "".join(f"\n[dim]{_t(d)}[/]" for d in r.decisions),
            took,
        )
    return table


def _history_image(r: DeploymentRecord) -> str:
    below = " ".join(p for p in (commit_text(r.commit), r.short_digest if r.digest else "") if p)
    return f"\n{_t(below)}" if below else ""


def history(args: argparse.Namespace) -> int:
    def body(engine: Engine) -> int:
        if getattr(args, "since", None):
            try:
                since = parse_since(args.since, engine.clock.now())
            except ValueError as exc:
                err.print(f"[bold red]✗[/] {_t(exc)}")
                return ExitCode.REFUSED
            # Every record of the window, oldest first (a Query by time range, page by page).
            records = engine.history_between(since, engine.clock.now())
        else:
            records = engine.history(max(1, args.n))
        if getattr(args, "csv", False):
            _write_csv(EXPORT_FIELDS, [_export_row(engine.target.name, r) for r in records])
        elif getattr(args, "json", False) and getattr(args, "since", None):
            rows = [_export_row(engine.target.name, r) for r in records]
            print(json.dumps(rows, default=str, indent=2))
        elif getattr(args, "json", False):
            print(json.dumps([_record_json(r) for r in records], default=str, indent=2))
        elif not records:
            out.print("No deployments yet.")
        else:
            _print_table(_history_table(records, f"Last {len(records)} deployments"))
        return ExitCode.OK

    return _run(args, body)


def unlock(args: argparse.Namespace) -> int:
    def body(engine: Engine) -> int:
        lock = engine.unlock()
        if lock is None:
            out.print("The lock was free; nothing to break.")
        else:
            out.print(
                f"Broke the lock. It was {_t(lock.holder)}'s: {_t(lock.tag)}, "
                f"{_t(lock.deployment_id)}."
            )
        return ExitCode.OK

    return _run(args, body)


# -- the export and the four keys ------------------------------------------------------------

# What a spreadsheet needs of each deployment (``history --since … --csv``/``--json``).
EXPORT_FIELDS = (
    "target",
    "id",
    "kind",
    "tag",
    "digest",
    "commit",
    "previous_tag",
    "requester",
    "requester_id",
    "aws_identity",
    "door",
    "reason",
    "started",
    "ended",
    "duration_s",
    "outcome",
    "outcome_reason",
    "ecs_status",
    "ecs_reason",
    "approvals",
    "break_glass",
    "bypassed",
    "decisions",
    "rollback_of",
)


def _export_row(target: str, r: DeploymentRecord) -> dict[str, object]:
    final = r.final
    return {
        "target": target,
        "id": r.id,
        "kind": r.kind,
        "tag": r.tag,
        "digest": r.digest,
        "commit": r.commit or "",
        "previous_tag": r.previous_tag,
        "requester": r.who_display or r.who,
        "requester_id": r.who,
        "aws_identity": r.who_arn,
        "door": r.source,
        "reason": r.reason,
        "started": r.started_at.isoformat(),
        "ended": r.finished_at.isoformat() if r.finished_at else "",
        "duration_s": round(r.duration) if r.duration is not None else "",
        "outcome": r.outcome.value if r.outcome else "IN_PROGRESS",
        "outcome_reason": r.outcome_reason,
        # ECS's service deployment status and reason (#26); the rollout state (DescribeServices)
        # of a record judged without one.
        "ecs_status": r.ecs_status or (final.rollout_state if final else ""),
        "ecs_reason": _ecs_reason(r),
        "approvals": ";".join(r.approved_by),
        "break_glass": r.break_glass,
        "bypassed": ";".join(r.bypassed),
        "decisions": ";".join(r.decisions),
        "rollback_of": r.rollback_of,
    }


def _ecs_reason(r: DeploymentRecord) -> str:
    final = r.final
    if final is None:
        return ""
    if r.ecs_status and final.service_deployment:
        return str(final.service_deployment.get("statusReason", ""))
    return final.rollout_reason


def _write_csv(fields: Sequence[str], rows: list[dict[str, object]]) -> None:
    """RFC 4180 CSV on stdout: a header, then one line a row (quoted where needed)."""
    writer = csv.DictWriter(out.file, fieldnames=list(fields), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    out.file.flush()


STATS_FIELDS = (
    "target",
    "since",
    "until",
    "deployments",
    "completed",
    "rolling_out",
    "frequency_per_week",
    "frequency_band",
    "lead_time_median_s",
    "lead_time_p90_s",
    "lead_time_source",
    "lead_time_band",
    "changes",
    "failed_changes",
    "change_failure_rate",
    "change_failure_band",
    "time_to_restore_median_s",
    "restores",
    "time_to_restore_band",
)


def _stats_row(k: FourKeys) -> dict[str, object]:
    data = as_json(k)
    return {
        **{f: data[f] for f in STATS_FIELDS if f in data},
        "frequency_band": k.bands.get("deployment_frequency", ""),
        "lead_time_band": k.bands.get("lead_time", ""),
        "change_failure_band": k.bands.get("change_failure_rate", ""),
        "time_to_restore_band": k.bands.get("time_to_restore", ""),
    }


def _band(k: FourKeys, key: str) -> str:
    band = k.bands.get(key)
    return f"\n[dim]{band}[/]" if band else ""


def _stats_table(keys: list[FourKeys], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "target",
        "deployments",
        "frequency",
        "lead time (median · p90)",
        "change failure rate",
        "time to restore",
    ):
        table.add_column(column)
    for k in keys:
        table.add_row(
            _t(k.target),
            f"{k.deployments}" + (f" (+{k.rolling_out} rolling out)" if k.rolling_out else ""),
            frequency_text(k.frequency_per_week) + _band(k, "deployment_frequency"),
            (
                f"{span_text(k.lead_time_median_s)} · {span_text(k.lead_time_p90_s)}"
                if k.lead_times
                else "-"
            )
            + _band(k, "lead_time"),
            (f"{rate_text(k.change_failure_rate)} ({k.failed_changes} of {k.changes})")
            + _band(k, "change_failure_rate"),
            (f"{span_text(k.time_to_restore_median_s)} ({k.restores})" if k.restores else "-")
            + _band(k, "time_to_restore"),
        )
    return table


def stats(args: argparse.Namespace) -> int:
    """DORA's four keys of the target (every target without --target) over --since."""

    def body(fleet: Fleet, target: Target) -> int:
        now = fleet.engine(target).clock.now()
        try:
            since = parse_since(args.since, now)
        except ValueError as exc:
            err.print(f"[bold red]✗[/] {_t(exc)}")
            return ExitCode.REFUSED
        every = _all_targets(args) and len(fleet.targets) > 1
        keys = fleet.stats(since, now, None if every else [target])
        if args.json:
            print(json.dumps({"targets": [as_json(k) for k in keys]}, indent=2))
            return ExitCode.OK
        if args.csv:
            _write_csv(STATS_FIELDS, [_stats_row(k) for k in keys])
            return ExitCode.OK
        _print_table(
            _stats_table(keys, f"The four keys, {since:%Y-%m-%d} to {now:%Y-%m-%d %H:%M} UTC")
        )
        sources = {k.lead_time_source for k in keys if k.lead_times}
        if sources - {SOURCE_COMMITS}:
            out.print(
                "Lead time: from the image's push to ECR where the commits are unknown "
                "(set GITHUB_TOKEN for commit times)."
            )
        elif sources:
            out.print("Lead time: from each commit (GitHub's compare) to the deployment's end.")
        out.print(f"Bands: {BANDS_REPORT}.")
        return ExitCode.OK

    return _run_fleet(args, body)


# A deployment ECS paused at a hook (bot/deploy/pausing.py) -----------------------------------
def _pause_lines(pause: Pause, now: datetime) -> list[str]:
    """What the pause shows: the stage and split, the timeout, the test listener and its
    check (red when the wrong release or nothing good answered)."""
    record, hook = pause.record, pause.hook
    lines = [
        f"[bold]{_t(record.kind)} {_t(record.id)} of {_t(record.tag)}[/] "
        f"(by {_t(record.who_display or record.who)}) is paused: "
        + _t(pause.shift.describe(record.tag, record.previous_tag or "the old revision", None, now))
    ]
    if hook.expires_at is not None:
        left = max(0, int((hook.expires_at - now).total_seconds() // 60))
        lines.append(
            f"  ECS {hook.timeout_words} by itself at {hook.expires_at:%H:%M:%S} UTC "
            f"(in {left} min) unless someone decides first."
        )
    if pause.test_url:
        lines.append(f"  test listener: {_t(pause.test_url)}")
    elif pause.test_url_note:
        lines.append(f"  [dim]test listener: not known ({_t(pause.test_url_note)})[/]")
    check = pause.verification
    if check is not None:
        colour = "green" if check.ok else "bold red"
        lines.append(f"  check {_t(check.url)}: [{colour}]{_t(check.describe())}[/]")
        if check.verdict == "old":
            old = _t(record.previous_tag)
            lines.append(f"  [bold red]the old release ({old}) still answers[/]")
        elif check.verdict == "other":
            lines.append(f"  [bold red]not the release being deployed ({_t(record.tag)})[/]")
    if pause.decided is not None:
        lines.append(f"  decided: {_t(pause.decided.describe())}")
    return lines


def continue_paused(args: argparse.Namespace) -> int:
    """``deploybot continue [--rollback]``: decide on the deployment ECS paused at a hook
    (ContinueServiceDeployment, once), then follow it to its end unless --no-wait. 0: it
    completed (--rollback: it rolled back); 1: it failed or was rolled back (--rollback:
    the rollback failed); 2: refused, nothing changed; 3: still rolling out at the timeout
    (or paused again); 4: lost sight of it."""
    action = ROLLBACK if args.rollback else CONTINUE

    def body(engine: Engine) -> int:
        who = requester(engine)
        pause = engine.paused()
        if pause is None:
            name = engine.target.name
            running = engine.rolling_out()
            now = (
                f"{running.kind} {running.id} of {running.tag} rolls out, not paused"
                if running
                else "nothing rolls out"
            )
            err.print(
                f"[bold red]✗[/] Nothing awaits a decision on {_t(name)} ({_t(now)}). "
                f"`{_t(_status_hint(engine))}` shows what runs; nothing was changed."
            )
            return ExitCode.REFUSED
        for line in _pause_lines(pause, engine.clock.now()):
            out.print(line, soft_wrap=True)
        verb = "Continue" if action == CONTINUE else "Roll back"
        question = f"{verb} {_t(pause.record.tag)} on {_t(engine.target.name)}?"
        if not _confirm(args, question):
            err.print("Nothing was decided: ECS still waits.")
            return ExitCode.REFUSED
        via = _via(args)
        try:
            decision = engine.decide_pause(
                who, action, via=via, of=pause.record.id, hook_id=pause.hook.hook_id
            )
        except ConfirmWrongRelease as red:
            if not _confirm(args, f"[bold red]{_t(red.message)}[/]", tty_only=True):
                err.print(
                    "Nothing was decided: ECS still waits. Off a terminal, --yes continues "
                    "over a red check."
                )
                return ExitCode.REFUSED
            decision = engine.decide_pause(
                who,
                action,
                via=via,
                of=pause.record.id,
                hook_id=pause.hook.hook_id,
                confirmed=True,
            )
        for bypass in decision.bypassed:
            err.print(f"[yellow]![/] {_t(bypass)}")
        news_detail = f"{verb.lower()} at {pause.hook.stage or 'a hook'}"
        tell_channel(
            engine,
            News(
                "break-glass" if decision.bypassed else "pause-decision",
                who.name,
                decision.decided.at,
                who.aws_identity,
                reason=via.break_glass or "",
                deployment_id=decision.record.id,
                tag=decision.record.tag,
                detail=news_detail,
            ),
        )
        asked = "asked ECS to continue" if action == CONTINUE else "asked ECS to roll back"
        if decision.lost:
            err.print(f"[yellow]![/] ECS's answer was lost ({_t(decision.lost)}); following it.")
        out.print(f"{verb}: {asked} ({_t(decision.decided.describe())}).")
        if args.no_wait:
            out.print(f"`{_t(_status_hint(engine))}` shows how it goes.")
            return ExitCode.OK
        with out.status("following it…"):
            outcome, why = engine.follow_abort(decision.record)
        return _after_decision(engine, decision.record, action, outcome, why)

    return _run(args, body)


class TrafficLines:
    """What a terminal prints of ECS's traffic shifting as a deployment goes: a line per stage
    or step ("canary: 10% on v4.4.0, 90% on v4.3.0, baking 10 min"), the pause (once per hook,
    with how to decide), and where a rolled back one got to."""

    def __init__(self, engine: Engine, record: DeploymentRecord) -> None:
        self.engine = engine
        self.record = record
        self.clock = StepClock()
        self.said: tuple[str, float | None] | None = None
        self.paused: str = ""

    def lines(self, snap: Snapshot) -> list[str]:
        shift = Shift.of(snap.service_deployment)
        if shift is None or not shift.shifts_traffic:
            return []
        self.clock.see(shift, snap.at)
        out_lines: list[str] = []
        record = self.record
        if shift.key() != self.said and not shift.paused:
            self.said = shift.key()
            old = record.previous_tag or "the old revision"
            text = shift.describe(record.tag, old, None, snap.at)
            out_lines.append(f"  [cyan]{_t(text)}[/]")
        hook = shift.hook
        if hook is not None and hook.hook_id != self.paused and not snap.final:
            self.paused = hook.hook_id
            try:
                pause = self.engine.pause_of(record, shift)
            except DeployError as exc:
                return [*out_lines, f"  [yellow]![/] paused; could not read it: {_t(exc.message)}"]
            out_lines += _pause_lines(pause, snap.at)
            name = self.engine.target.name
            out_lines.append(
                f"  decide: `deploybot --target {_t(name)} continue` (or `--rollback`), or "
                "Continue / Roll back on its Slack message"
            )
        return out_lines

    def reached(self) -> str:
        furthest = self.clock.furthest
        if furthest is None or not furthest.new_percent:
            return ""
        return furthest.reached(self.record.tag)


def _confirm(args: argparse.Namespace, question: str, *, tty_only: bool = False) -> bool:
    """Asked in a terminal without --yes; off a terminal nobody can answer: go on, unless
    ``tty_only`` (a second confirmation needs --yes there)."""
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        return not tty_only
    try:
        return Confirm.ask(question, console=out, default=False)
    except EOFError:
        return False


def _after_decision(
    engine: Engine, record: DeploymentRecord, action: str, outcome: Outcome | None, why: str
) -> int:
    if outcome is None:
        waited = engine.settings.rollout_timeout_seconds
        if why:
            out.print(
                f"[bold yellow]? Lost sight of {_t(record.tag)}[/] after {waited:.0f} s: "
                f"{_t(why)}. `{_t(_status_hint(engine))}` shows how it goes."
            )
            return ExitCode.LOST
        out.print(
            f"[bold yellow]… {_t(record.tag)} is still rolling out[/] after {waited:.0f} s "
            f"(paused again, or shifting slowly). `{_t(_status_hint(engine))}` shows how it goes."
        )
        return ExitCode.STILL_ROLLING_OUT
    wanted = Outcome.COMPLETED if action == CONTINUE else Outcome.ROLLED_BACK
    text = f"{_t(outcome.label)}: {_t(why.rstrip('.'))}."
    if outcome is wanted:
        out.print(f"[bold green]✓ {_t(record.tag)} {text}[/]")
        return ExitCode.OK
    out.print(f"[bold red]✗ {_t(record.tag)} {text}[/]")
    return ExitCode.FAILED
