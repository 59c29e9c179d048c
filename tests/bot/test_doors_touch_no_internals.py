"""The doors (bot/slack/, the terminal, the server) call the engine's methods, never its parts:
no ``engine.ledger``, ``.guards``, ``.poller`` or ``.reconciler`` (issue 25). Imports are
import-linter's to check (``make lint``); attribute reaches are not imports, so they are
checked here, on the source's syntax tree."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOORS = [
    *sorted((ROOT / "bot" / "slack").glob("*.py")),
    ROOT / "bot" / "terminal.py",
    ROOT / "bot" / "server.py",
    ROOT / "bot" / "cli.py",
]
PARTS = frozenset({"ledger", "guards", "poller", "reconciler"})


def reaches(source: str, name: str) -> list[str]:
    """``engine.<part>`` (any expression naming an engine: ``self.engine``, ``place.engine``,
    ``ctx.engine(target)``) in ``source``, as name:line: text."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Attribute) or node.attr not in PARTS:
            continue
        owner = node.value.func if isinstance(node.value, ast.Call) else node.value
        called = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if "engine" in called.lower():
            found.append((node.lineno, f"{name}:{node.lineno}: {ast.unparse(node)}"))
    return [hit for _, hit in sorted(found)]


def test_the_doors_reach_into_no_engine_part() -> None:
    assert [p for p in DOORS if p.exists()] == DOORS
    hits = [h for p in DOORS for h in reaches(p.read_text(), str(p.relative_to(ROOT)))]
    assert hits == []


def test_the_check_sees_a_reach() -> None:
    """The check itself: each shape of a reach is found."""
    source = (
        "engine.ledger.get(x)\n"
        "self.engine.guards.request(x)\n"
        "ctx.engine(target).poller.tracking()\n"
        "place.engine.reconciler\n"
        "guards.change(x)\n"  # the Slack module called guards: not the engine's part
    )
    assert [hit.split(": ", 1)[1] for hit in reaches(source, "sample")] == [
        "engine.ledger",
        "self.engine.guards",
        "ctx.engine(target).poller",
        "place.engine.reconciler",
    ]
