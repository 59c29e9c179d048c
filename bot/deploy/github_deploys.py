"""GitHub Deployments: what runs where, told to GitHub as the engine's rollouts start and end.

Follow-through of the engine, not of a watcher: ``Engine.start`` hands each deployment here
once ECS was asked, and the Reconciler's ``settle`` (where every record is closed; the close
is a conditional write, so once per outcome whichever process follows it) hands its outcome.
The deployment is GitHub's record of the commit (the image's ``sha-`` tag) in the target's
environment: ``in_progress`` at the start, then ``success``, ``failure`` or ``error``, and
``inactive`` for the earlier successful one a success replaced (GitHub does that itself only
outside production: "auto_inactive … only for non-production environments", REST reference,
"Create a deployment status").

Nothing here may delay or fail a deploy: one worker thread makes every call, each with
GitHubClient's short timeout and no retry; what fails is logged and dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.deploy.records import DeploymentRecord
from bot.deploy.rollout import Outcome, Snapshot
from bot.github import GitHubClient, Unavailable

log = logging.getLogger("deploybot.github_deployments")

# The payload key naming deploybot's deployment: how any process finds the GitHub deployment
# of a record it settles (the one that created it may be gone: `deploy --no-wait`).
PAYLOAD_KEY = "deploybot_deployment"
# Recent deployments of the environment searched for a record's; deploybot makes one each.
_SEARCHED = 30
STATES = {
    Outcome.COMPLETED: "success",
    Outcome.FAILED: "failure",
    Outcome.ROLLED_BACK: "failure",
    Outcome.NOT_STARTED: "error",
    # Superseded, not failed: GitHub's own word for a deployment another replaced
    # ("inactive", https://docs.github.com/en/rest/deployments/statuses).
    Outcome.REPLACED: "inactive",
}


@dataclass(frozen=True)
class Told:
    """One thing told to GitHub (or not), for logs and tests."""

    deployment_id: str
    state: str
    github_id: int | None
    problem: str = ""


class GitHubDeployments:
    """The GitHub deployments of one target's rollouts (``environment``: the target's name)."""

    def __init__(self, client: GitHubClient, environment: str, log_url: str | None = None) -> None:
        self.client = client
        self.environment = environment
        self.log_url = log_url
        self.told: deque[Told] = deque(maxlen=100)
        self._ids: dict[str, int] = {}  # deploybot deployment id -> GitHub deployment id
        self._jobs: deque[Callable[[], None]] = deque()
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """GITHUB_REPOSITORY and GITHUB_TOKEN are both set."""
        return self.client.configured and self.client.has_token

    # -- what the engine calls (returns at once) ------------------------------------------

    def started(self, record: DeploymentRecord) -> None:
        """ECS was asked for ``record``: a GitHub deployment of its commit, in_progress."""
        if self.enabled:
            self._submit(lambda: self._create(record))

    def settled(self, record: DeploymentRecord, final: Snapshot) -> None:
        """``record`` was closed with ``final``: its GitHub deployment's last status."""
        if self.enabled and final.outcome in STATES:
            self._submit(lambda: self._finish(record, final))

    def close(self, timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` s) for what is queued to be told; False if some was not."""
        with self._cond:
            done = self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)
            if not done:
                log.warning("%d GitHub updates were not sent before stopping", len(self._jobs))
            return done

    # -- the worker -------------------------------------------------------------------------

    def _submit(self, job: Callable[[], None]) -> None:
        with self._cond:
            self._jobs.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="github", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(self._jobs), timeout=30.0):
                    self._thread = None  # idle: a new job starts a new thread
                    return
                job = self._jobs.popleft()
                self._busy = True
            try:
                job()
            except Exception:  # GitHubClient never raises; this is for our own mistakes
                log.exception("telling GitHub failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _create(self, record: DeploymentRecord) -> None:
        if not record.commit:
            why = "its image has no sha- tag" if record.commit == "" else "its commit is unknown"
            log.info("no GitHub deployment: %s", why, extra=record.log_fields)
            self.told.append(Told(record.id, "skipped", None, why))
            return
        who = record.who_display or record.who
        # A terminal's name is declared; the AWS identity beside it is what AWS said it is.
        description = f"{record.kind} of {record.tag} by {who} ({record.id})"
        if record.who_arn and len(description) + len(record.who_arn) + 6 <= 140:
            description = f"{description} as {record.who_arn}"
        made = self.client.create_deployment(
            record.commit,
            self.environment,
            description=description[:140],
            payload={
                PAYLOAD_KEY: record.id,
                "tag": record.tag,
                "digest": record.digest,
                "service": record.service,
                "who": who,
                "aws_identity": record.who_arn,
            },
        )
        if isinstance(made, Unavailable):
            self.told.append(Told(record.id, "created", None, made.reason))
            return
        self._ids[record.id] = made.id
        self._status(record, made.id, "in_progress", f"rolling out {record.tag}")

    def _finish(self, record: DeploymentRecord, final: Snapshot) -> None:
        assert final.outcome is not None
        github_id = self._ids.pop(record.id, None) or self._find(record)
        if github_id is None:
            return
        state = STATES[final.outcome]
        took = f"{final.elapsed:.0f} s"
        if final.outcome == Outcome.COMPLETED:
            words = f"{record.tag} runs ({took})"
        elif final.outcome == Outcome.NOT_STARTED:
            words = f"never started: {final.outcome_reason}"
        else:
            words = f"{final.outcome.label} after {took}: {final.outcome_reason}"
        told = self._status(record, github_id, state, words, final.log_url or None)
        if told and state == "success":
            replaced = self.client.deactivate_previous(self.environment, github_id)
            if isinstance(replaced, Unavailable):
                log.warning(
                    "could not mark the replaced GitHub deployment inactive: %s",
                    replaced.reason,
                    extra=record.log_fields,
                )
            else:
                for old in replaced:
                    self.told.append(Told(record.id, "inactive", old))

    def _find(self, record: DeploymentRecord) -> int | None:
        """The GitHub deployment another process made for ``record`` (its payload names it)."""
        if not record.commit:
            return None
        found = self.client.deployments(environment=self.environment, limit=_SEARCHED)
        if isinstance(found, Unavailable):
            log.warning(
                "could not find the GitHub deployment: %s", found.reason, extra=record.log_fields
            )
            return None
        return next((d.id for d in found if d.payload.get(PAYLOAD_KEY) == record.id), None)

    def _status(
        self,
        record: DeploymentRecord,
        github_id: int,
        state: str,
        description: str,
        log_url: str | None = None,
    ) -> bool:
        done = self.client.set_status(
            github_id, state, log_url=log_url or self.log_url, description=description
        )
        problem = done.reason if isinstance(done, Unavailable) else ""
        self.told.append(Told(record.id, state, github_id, problem))
        if problem:
            log.warning(
                "GitHub deployment %s not set to %s: %s",
                github_id,
                state,
                problem,
                extra=record.log_fields,
            )
        return not problem
