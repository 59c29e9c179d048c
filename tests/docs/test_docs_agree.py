"""README.md and docs/OPERATIONS.md agree with the code where they used to disagree: which
make targets print deploybot's exit code (every target whose recipe runs deploybot through
tools/explain-exit.sh, ``$(DEPLOYBOT)``: each page names them all), and what a slash
command's name may hold (bot/command_names.py refuses ``_``)."""

from __future__ import annotations

import re
from pathlib import Path

from bot.command_names import problem_with

ROOT = Path(__file__).resolve().parents[2]


def targets_printing_the_code() -> set[str]:
    found: set[str] = set()
    target = ""
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        rule = re.match(r"^([a-z][a-z0-9-]*)\s*:(?!=)", line)
        if rule:
            target = rule.group(1)
        elif line.startswith("\t") and "$(DEPLOYBOT)" in line and target:
            found.add(target)
    return found


def paragraph_saying(page: Path, words: str) -> str:
    for paragraph in page.read_text(encoding="utf-8").split("\n\n"):
        if words in paragraph:
            return " ".join(paragraph.split())
    raise AssertionError(f"{page.name} has no paragraph saying {words!r}")


def test_the_pages_name_every_make_target_that_prints_deploybots_code() -> None:
    printing = targets_printing_the_code()
    assert {"deploy", "status", "unlock", "promote"} <= printing, printing
    for page in (ROOT / "README.md", ROOT / "docs" / "OPERATIONS.md"):
        said = paragraph_saying(page, "deploybot exited")
        named = set(re.findall(r"`make ([a-z-]+)`", said))
        assert named == printing, (page.name, sorted(printing - named), sorted(named - printing))


def test_the_readme_says_what_command_names_deploybot_takes() -> None:
    assert problem_with("/deploy_prod") is not None  # refused: "no '_'"
    assert problem_with("/deploy-prod") is None
    said = paragraph_saying(ROOT / "README.md", "SLACK_DEPLOY_COMMAND")
    # It said "lowercase letters, digits, `-` and `_` after the `/`".
    assert "`-` and `_`" not in said, said
    assert "no `_`" in said, said
