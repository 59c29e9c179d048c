"""deploybot's exit codes are one table (bot/exit_codes.py): DESIGN.md's numbers, the README's
outcome table, and what tools/explain-exit.sh says for make's users all agree with it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bot.deploy.rollout import Outcome
from bot.exit_codes import ExitCode

ROOT = Path(__file__).resolve().parents[2]


def test_the_codes_are_designs() -> None:
    """The numbers are an interface scripts rely on (DESIGN.md, "Exit codes"): never renumbered."""
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "REFUSED": 2,
        "STILL_ROLLING_OUT": 3,
        "LOST": 4,
        "INTERRUPTED": 130,
    }


def test_the_readmes_outcome_table_is_the_codes() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("Every deployment ends with one outcome", 1)[1].split("\n\n", 2)[1]
    rows = dict(
        (label, int(code))
        for label, code in re.findall(r"^\| (.+?) \| .+ \| (\d) \|$", table, flags=re.M)
    )
    assert rows == {outcome.label: int(outcome.exit_code) for outcome in Outcome}
    assert all(isinstance(outcome.exit_code, ExitCode) for outcome in Outcome)


@pytest.mark.parametrize("code", [c for c in ExitCode if c is not ExitCode.OK])
def test_make_says_what_each_code_means(code: ExitCode) -> None:
    """The Makefile runs deploybot through explain-exit.sh, which passes the code on and says it
    in words; a code it did not know would read "unexpected"."""
    ran = subprocess.run(
        ["bash", str(ROOT / "tools/explain-exit.sh"), "bash", "-c", f"exit {int(code)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == code
    assert ran.stderr.startswith(f"make: deploybot exited {int(code)}: ")
    assert "unexpected" not in ran.stderr
