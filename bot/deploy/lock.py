"""The deploy lock's judgement: a held lock is taken over only when its holder is proven done
(its record settled, or ECS shows its deployment ended), whatever the clocks say; otherwise the
refusal names the holder and what to do. The lock item itself is the ledger's."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.deploy.parts import Parts, Stage
from bot.deploy.reads import Reads
from bot.deploy.records import Lock, Requester
from bot.deploy.rollout import EcsDeployment, ServiceState, Snapshot
from bot.deploy.table import Precondition
from bot.errors import LockHeld

log = logging.getLogger("deploybot.engine")


class Locking(Stage):
    """The lock of one target, as the stages above take and judge it."""

    def __init__(self, parts: Parts, reads: Reads) -> None:
        super().__init__(parts)
        self.reads = reads

    def _lock_held(self, held: Lock, why: str, text: str = "") -> LockHeld:
        return LockHeld(
            text
            or f"Deploys are locked: {held.describe()}{why}. Wait for it to finish, or break a "
            f"stale lock with `{self.hints.unlock(self.target.name)}`.",
            holder=held.holder,
            tag=held.tag,
            since=held.acquired_at,
            deployment_id=held.deployment_id,
        )

    def _rolling_refusal(
        self, held: Lock, ecs_id: str, counts: EcsDeployment | Snapshot
    ) -> LockHeld:
        """The refusal while ECS shows the holder rolling out: no stale lock to break, a
        deployment to wait for or abort (Slack offers the queue beside it)."""
        return self._lock_held(
            held,
            "",
            f"Deploys are locked: {held.tag} is still rolling out since "
            f"{held.acquired_at:%H:%M} UTC ({held.deployment_id} by {held.holder}, ECS "
            f"{ecs_id or '?'}), {counts.running}/{counts.desired} running. Wait for it to end, "
            f"or abort it (`{self.hints.abort(self.target.name)}`); nothing was changed.",
        )

    def unlock(self, by: Requester | None = None, *, only_if_idle: bool = False) -> Lock | None:
        """Break the lock, saying whose it was (None: it was free). ``only_if_idle`` (Slack's
        Unlock, where no one sees ECS for themselves): only when ECS shows nothing rolling
        out, else LockHeld saying what is; a lock whose holder is done is freed either way."""
        if only_if_idle:
            held = self.ledger.lock_item()
            if held is None:
                return None
            if self._free_if_done(held) is None:  # its holder was done: freed
                lock: Lock | None = held
            else:
                rolling = ServiceState.from_api(self.reads.service()).rolling_out
                if rolling is not None:
                    raise LockHeld(
                        f"Not unlocked: {held.describe()}{_rolling_out(rolling.id, rolling)}. "
                        "Wait for it to finish, or stop it "
                        f"(`{self.hints.abort(self.target.name)}`). Nothing was changed.",
                        holder=held.holder,
                        tag=held.tag,
                        since=held.acquired_at,
                        deployment_id=held.deployment_id,
                    )
                lock = self.ledger.break_lock()
        else:
            lock = self.ledger.break_lock()
        if lock is not None:
            log.warning(
                "lock broken by %s; it was %s's",
                by.name if by else "someone at a terminal",
                lock.holder,
                extra={
                    "deployment_id": lock.deployment_id,
                    "service": self.service_name,
                    "tag": lock.tag,
                    "who": lock.holder,
                    "source": lock.source,
                },
            )
        return lock

    def acquire(
        self,
        requester: Requester,
        tag: str,
        deployment_id: str,
        record_sk: str = "",
        checks: Sequence[Precondition] = (),
    ) -> Lock:
        """Take the service's lock, or raise LockHeld naming the holder.

        A held lock is taken over only when its holder is proven done, whatever the clocks
        say: its record settled, or ECS shows its deployment finished (or never started). A
        lock with no record is taken over once its lease has lapsed by CLOCK_SKEW's margin.
        At most two conditional puts, one read of the holder's record and one
        DescribeServices: never a spin."""
        for _ in range(2):
            taken, held = self.ledger.try_acquire(requester, tag, deployment_id, record_sk, checks)
            if taken:
                return held
            refusal = self._free_if_done(held)
            if refusal is not None:
                raise refusal
        # Its holder was done, and someone else took the lock first: they hold it now.
        raise self._lock_held(held, "")

    def _free_if_done(self, held: Lock) -> LockHeld | None:
        """Take ``held`` over if its holder is done (None), else the refusal naming it.
        Done is about the holder; whether the takeover won a race is the next put's to say.
        The holder's record is judged against a DescribeServices read after it (never an
        earlier one: see Planner._prepare); this costs one call, and only when the lock is held."""
        now = self.clock.now()
        followed = self.poller.last(held.deployment_id)
        if followed is not None:  # this process follows it: it is live until the poller says
            return self._rolling_refusal(held, followed.ecs_deployment_id, followed)
        record = self.ledger.get_record(held.record_sk) if held.record_sk else None
        if record is None:
            if held.lapsed(now):
                self.ledger.take_over(held)
                return None
            return self._lock_held(held, "")
        if record.settled:
            self.ledger.take_over(held)  # its holder closed it and died before releasing
            return None
        # Open, or left "still rolling out" / "unknown" by a watch that ended before ECS did:
        # the lock is its until ECS is seen to end it, whatever its lease says.
        state = ServiceState.from_api(self.reads.service())
        reading = self.reconciler.read(record, state, now)
        if reading.verdict is not None:
            final = self.reconciler.final_snapshot(
                reading.record, reading.verdict, now, reading.ours, base=record.final
            )
            self.reconciler.settle(reading.record, final, release=False)
            self.ledger.take_over(held)
            return None
        if not record.open:  # nobody follows it: keep the lock from the table's TTL
            self.reconciler.keep_lock(record)
        if reading.ours is not None:
            return self._rolling_refusal(held, reading.ours.id, reading.ours)
        return self._lock_held(held, "; it is starting (ECS shows no deployment of it yet)")

    def check_lock(self) -> None:
        """Refuse (LockHeld) if the lock is held by a live rollout; a lock whose holder is
        done is released on the way. Reads only (but for that release)."""
        held = self.ledger.lock_item()
        if held is None:
            return
        refusal = self._free_if_done(held)
        if refusal is not None:
            raise refusal


def _rolling_out(ecs_id: str, counts: EcsDeployment | Snapshot) -> str:
    return (
        f"; its ECS deployment {ecs_id or '?'} is still rolling out "
        f"({counts.running}/{counts.desired} running)"
    )
