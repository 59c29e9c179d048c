"""deploybot's exit codes: the interface of DESIGN.md that scripts and the Makefile rely on.

tools/explain-exit.sh, which the Makefile runs deploybot through, says each code's meaning in
words; tests/bot/test_exit_codes.py holds it to this table.

``deploybot continue`` (a deployment ECS paused at a hook) ends the same way: 0 it completed
(with ``--rollback``: it rolled back, as asked); 1 it failed or was rolled back (``--rollback``:
the rollback failed); 2 nothing awaits a decision, someone decided first, a rule refused, or a
red check of the test listener was not confirmed (nothing changed); 3 still rolling out at the
timeout (paused again, say); 4 lost sight of it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``deploybot`` command ended with; the outcome of a rollout maps onto these."""

    OK = 0  # done
    FAILED = 1  # failed, rolled back, aborted or replaced
    REFUSED = 2  # refused before any change: bad input, a rule, lock held, bad configuration
    STILL_ROLLING_OUT = 3  # still rolling out at the timeout; the lock stays held
    LOST = 4  # lost sight of the rollout (AWS stopped answering); the lock stays held
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it); ECS carries on
