"""What one target's engine is made of: its settings, clock, AWS clients, repositories, rules,
follower and GitHub, built once (``Parts``) and shared by the engine's stages (``Stage``).

The stages, each a module named for what it does, the lower never importing the higher:

    reads.py       what runs, the status, the history, the images, what a change changes
    measure.py     DORA's four keys over a window (``stats``)
    lock.py        the deploy lock: taken only from a holder proven done, refused otherwise
    planning.py    a plan of every kind, through the one rules check
    guardrails.py  freeze, approval requests, the queue's decisions
    starting.py    start a plan: the lock with its checks, the revision, the record, ECS
    aborting.py    stop a rollout: put the previous task definition back, follow that

bot/deploy/engine.py is the facade the doors call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bot.clock import Clock
from bot.deploy import links
from bot.deploy.aws import AwsClient
from bot.deploy.github_deploys import GitHubDeployments
from bot.deploy.guards import GuardBook
from bot.deploy.ledger import Ledger
from bot.deploy.poller import ServicePoller
from bot.deploy.reconcile import Reconciler
from bot.github import GitHubClient
from bot.hints import Door as HintsDoor
from bot.hints import Hints
from bot.settings import Settings
from bot.target import Target


class Parts:
    """One target's parts. ``door``: whose words the refusals speak (bot/hints.py); the bot
    sets "slack" (Fleet.speak), the Makefile's runs "make"."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        aws: AwsClient,
        target: Target,
        follower: str,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.aws = aws
        self.target = target
        self.ledger = Ledger(aws, settings.lock_lease_seconds, clock)
        self.guards = GuardBook(self.ledger.table, clock)
        self.door: HintsDoor = "cli"
        self.poller = ServicePoller(
            aws,
            self.ledger,
            poll_seconds=settings.rollout_poll_seconds,
            timeout_seconds=settings.rollout_timeout_seconds,
            lease_seconds=settings.lock_lease_seconds,
            clock=clock,
            follower=follower,
            lost_seconds=settings.aws_lost_seconds,
        )
        self.reconciler: Reconciler = self.poller.reconciler
        # GitHub: compare links and commit lists for plans; GitHub deployments as the
        # follow-through of every rollout this engine starts or settles.
        self.github = GitHubClient.from_settings(settings)
        self.github_deployments = GitHubDeployments(
            self.github, settings.deploy_target, self.console_url
        )
        # A status's reads of the lock, the freeze and the queue run here, beside its reads of
        # the history and the service (threads made when first needed).
        self.beside = ThreadPoolExecutor(max_workers=4, thread_name_prefix="deploybot-status")

    @property
    def hints(self) -> Hints:
        """How this engine's texts spell the commands they suggest (the door's syntax, the
        configured slash-command names)."""
        return Hints.at(self.door, self.settings.slack_commands)

    @property
    def service_name(self) -> str:
        return f"{self.settings.ecs_cluster}/{self.settings.ecs_service}"

    @property
    def console_url(self) -> str:
        """The service's Deployments tab in the ECS console: where to look at a rollout."""
        s = self.settings
        return links.service_deployments_url(self.aws.region, s.ecs_cluster, s.ecs_service)


class Stage:
    """A stage of the engine: its parts by name (``self.ledger``, ``self.hints``…)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    @property
    def settings(self) -> Settings:
        return self.parts.settings

    @property
    def clock(self) -> Clock:
        return self.parts.clock

    @property
    def aws(self) -> AwsClient:
        return self.parts.aws

    @property
    def target(self) -> Target:
        return self.parts.target

    @property
    def ledger(self) -> Ledger:
        return self.parts.ledger

    @property
    def guards(self) -> GuardBook:
        return self.parts.guards

    @property
    def poller(self) -> ServicePoller:
        return self.parts.poller

    @property
    def reconciler(self) -> Reconciler:
        return self.parts.reconciler

    @property
    def github(self) -> GitHubClient:
        return self.parts.github

    @property
    def github_deployments(self) -> GitHubDeployments:
        return self.parts.github_deployments

    @property
    def hints(self) -> Hints:
        return self.parts.hints

    @property
    def service_name(self) -> str:
        return self.parts.service_name
