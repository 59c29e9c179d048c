"""DescribeServices in batches: every watched service of a cluster in one call per poll interval.

ECS's DescribeServices takes up to ten services of one cluster per call ("You may specify up
to 10 services to describe in a single operation", the API reference's ``services``:
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeServices.html; more
is a ClientException, lyft/cartography PR #828). One :class:`ServiceDescriptions` is shared
by every target's AwsClient in a process (``AwsClient.sibling``), so the pollers of twenty
targets, each polling its own service, cost one call per cluster (per ten services) per
interval instead of twenty:

- A poll asks with ``max_age`` (a little under the poll interval): a description fetched that
  recently by any caller is answered from the cache, else one call describes this service
  together with the cluster's other *watched* services (those asked for with a ``max_age``
  lately), refreshing them all. Two pollers in one interval share one call, whatever their
  phase: whoever finds the cache stale fetches for both.
- A plain read (``max_age`` 0: plans, lock checks) always calls ECS, and refreshes the
  watched services of the cluster in the same call.
- ``many`` describes a list of services, one call per cluster per ten (the status of every
  target).
- A write through this process (UpdateService) forgets the service's description: the next
  poll sees what ECS says after it, never a description from before. A call that was on its
  way while the write happened (another target's poll, carrying this service along) does not
  cache its answer for it: each write bumps the service's generation, and an answer is kept
  only if the generation did not move while the call ran.

Only answers are cached; an error is the caller's, and the next caller tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bot.clock import SYSTEM_CLOCK, Clock

MAX_PER_CALL = 10  # DescribeServices' limit (see above)
# How long after its last poll a service still rides along in its cluster's calls: a poller
# that stopped (its deployments ended) soon stops costing anything.
WATCH_ROUNDS = 3

Key = tuple[str, str]  # (cluster, service)
Describe = Callable[[str, list[str]], dict[str, Any]]


@dataclass(frozen=True)
class _Entry:
    service: dict[str, Any] | None  # None: ECS does not know it (or it is INACTIVE)
    fetched_at: float  # monotonic


class ServiceDescriptions:
    """Per-cluster batched DescribeServices with a short-lived cache; thread-safe."""

    def __init__(self, describe: Describe, clock: Clock = SYSTEM_CLOCK) -> None:
        """``describe(cluster, services)`` is one DescribeServices call (its raw answer)."""
        self._describe = describe
        self._clock = clock
        self._lock = threading.Lock()
        self._cluster_locks: dict[str, threading.Lock] = {}
        self._cache: dict[Key, _Entry] = {}
        self._watched: dict[Key, float] = {}  # until when (monotonic) a service rides along
        self._generation: dict[Key, int] = {}  # bumped by every forget (a write)
        self.calls = 0  # DescribeServices calls made (the benchmark reads it)

    def get(self, cluster: str, service: str, max_age: float = 0.0) -> dict[str, Any] | None:
        """The service's description, at most ``max_age`` seconds old (0: fetched now); None
        when the cluster or the service does not exist. Raises what botocore raises."""
        key = (cluster, service)
        if max_age > 0:
            with self._lock:
                self._watched[key] = self._clock.monotonic() + WATCH_ROUNDS * max_age
        with self._cluster_lock(cluster):
            # Checked under the cluster's lock: a caller that waited for another's call
            # takes its answer instead of making a second one.
            if max_age > 0:
                cached = self._fresh(key, max_age)
                if cached is not None:
                    return cached.service
            found = self._fetch(cluster, [service, *self._riders(cluster, exclude={service})])
            return found.get(service)

    def many(self, keys: Iterable[Key], max_age: float = 0.0) -> dict[Key, dict[str, Any] | None]:
        """Every service of ``keys``: one call per cluster per ten services (fewer when fresh
        descriptions are cached and ``max_age`` allows them)."""
        wanted = list(dict.fromkeys(keys))
        by_cluster: dict[str, list[str]] = {}
        for cluster, service in wanted:
            by_cluster.setdefault(cluster, []).append(service)
        out: dict[Key, dict[str, Any] | None] = {}
        for cluster, services in by_cluster.items():
            with self._cluster_lock(cluster):
                stale = []
                for name in services:
                    cached = self._fresh((cluster, name), max_age)
                    if cached is None:
                        stale.append(name)
                    else:
                        out[(cluster, name)] = cached.service
                if not stale:
                    continue
                room = -len(stale) % MAX_PER_CALL  # the last call's spare places
                riders = self._riders(cluster, exclude=set(stale))[:room]
                found = self._fetch(cluster, stale + riders)
                out.update({(cluster, name): found.get(name) for name in stale})
        return {key: out.get(key) for key in wanted}

    def forget(self, cluster: str, service: str) -> None:
        """Drop the cached description (after a write that changes the service)."""
        with self._lock:
            self._cache.pop((cluster, service), None)
            key = (cluster, service)
            self._generation[key] = self._generation.get(key, 0) + 1

    # -------------------------------------------------------------------------------------
    def _cluster_lock(self, cluster: str) -> threading.Lock:
        with self._lock:
            return self._cluster_locks.setdefault(cluster, threading.Lock())

    def _fresh(self, key: Key, max_age: float) -> _Entry | None:
        if max_age <= 0:
            return None
        with self._lock:
            entry = self._cache.get(key)
        if entry is None or self._clock.monotonic() - entry.fetched_at >= max_age:
            return None
        return entry

    def _riders(self, cluster: str, exclude: set[str]) -> list[str]:
        """The cluster's other watched services, as many as fit beside the one asked for."""
        now = self._clock.monotonic()
        with self._lock:
            for key in [k for k, until in self._watched.items() if until < now]:
                del self._watched[key]
            riders = [s for (c, s) in self._watched if c == cluster and s not in exclude]
        return riders[: MAX_PER_CALL - 1]

    def _fetch(self, cluster: str, services: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Describe ``services`` (ten a call); cache each answer unless the service was
        written meanwhile. Every answer, by name (None: not found)."""
        names = list(dict.fromkeys(services))
        with self._lock:
            before = {name: self._generation.get((cluster, name), 0) for name in names}
        # Stamped with the time the call was made: an answer is as old as its question.
        asked_at = self._clock.monotonic()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(names), MAX_PER_CALL):
            chunk = names[start : start + MAX_PER_CALL]
            self.calls += 1
            try:
                resp = self._describe(cluster, chunk)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ClusterNotFoundException":
                    raise
                resp = {}
            for svc in resp.get("services", []):
                # An INACTIVE service (deleted) may sit beside a new one of the same name;
                # a service may be asked for by name or by ARN.
                if svc.get("status") == "INACTIVE":
                    continue
                for name in (str(svc.get("serviceName", "")), str(svc.get("serviceArn", ""))):
                    found.setdefault(name, dict(svc))
        with self._lock:
            for name in names:
                if self._generation.get((cluster, name), 0) == before[name]:
                    self._cache[(cluster, name)] = _Entry(found.get(name), asked_at)
        return {name: found.get(name) for name in names}
