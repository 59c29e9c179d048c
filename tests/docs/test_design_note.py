"""docs/DESIGN.md names a file for each box of a deployment's life: each file it names exists,
and each name it gives a class or function is in that file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTE = ROOT / "docs" / "DESIGN.md"


def test_every_file_the_design_note_names_exists() -> None:
    text = NOTE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:bot|tests)/[\w/]+\.py)`", text))
    assert len(named) >= 20, named
    assert sorted(p for p in named if not (ROOT / p).is_file()) == []


def test_every_name_the_design_note_places_is_in_its_file() -> None:
    """``Name`` (``bot/x.py``) and ``bot/x.py`` (``Name``): the name is defined in the file."""
    text = NOTE.read_text(encoding="utf-8")
    pairs = re.findall(r"`((?:bot)/[\w/]+\.py)` \(`([\w.]+)`", text)
    pairs += [(p, n) for n, p in re.findall(r"`([\w.]+)`, `((?:bot)/[\w/]+\.py)`", text)]
    assert pairs
    missing = []
    for path, name in pairs:
        last = name.split(".")[-1]
        if not re.search(rf"^\s*(?:async def|def|class) {last}\b", (ROOT / path).read_text(), re.M):
            missing.append(f"{name} in {path}")
    assert missing == []
