"""The terminal's rollout bar: a healthy rollout under way is green, not rich's default
pink-red (its theme's ``bar.complete``, rgb(249,38,114)), which reads as a failure."""

from __future__ import annotations

import io

from rich.console import Console

from bot.terminal import rollout_progress


def test_a_healthy_rollouts_bar_is_green() -> None:
    console = Console(
        file=io.StringIO(), record=True, force_terminal=True, color_system="truecolor", width=100
    )
    progress = rollout_progress(console)
    progress.add_task("rollout", total=3, completed=2, state="IN_PROGRESS", pending=1)
    console.print(progress.make_tasks_table(progress.tasks))
    drawn = console.export_text(styles=True)
    assert "2/3 running, 1 pending" in drawn
    assert "249;38;114" not in drawn, "rich's pink-red: a healthy rollout looks failed"
    assert "\x1b[32m━" in drawn, drawn  # green, filling
