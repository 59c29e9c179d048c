"""The four keys drawn: a PNG of deployments per week (completed and failed stacked) with lead
time's median as a line. It renders what bot/deploy/stats.py computed; it decides nothing.

matplotlib's object API with the Agg canvas, never pyplot: pyplot keeps global figures and a
backend chosen at import, and the bot draws from worker threads ("the object-oriented API is
recommended … in a web application server", matplotlib's "Embedding in a web application
server" and Agg backend docs).
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from bot.deploy.stats import FourKeys

COMPLETED = "#2e7d32"
FAILED = "#c62828"
LEAD_TIME = "#1565c0"


def _hours(seconds: float | None) -> float:
    return float("nan") if seconds is None else seconds / 3600


def png(keys: FourKeys, *, title: str | None = None) -> bytes:
    """The chart of ``keys`` as PNG bytes (about 900x450 px)."""
    fig = Figure(figsize=(9, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = [w.week_start.strftime("%d %b") for w in keys.weeks]
    xs = list(range(len(keys.weeks)))
    completed = [w.completed for w in keys.weeks]
    failed = [w.failed for w in keys.weeks]
    ax.bar(xs, completed, color=COMPLETED, width=0.7)
    ax.bar(xs, failed, bottom=completed, color=FAILED, width=0.7)
    many = len(xs) > 8
    ax.set_xticks(xs, labels, rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_xlim(-0.6, max(len(xs), 4) - 0.4)  # one week is one bar, not the whole width
    ax.set_ylabel("deployments")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = max((c + f for c, f in zip(completed, failed, strict=True)), default=0)
    ax.set_ylim(0, max(top, 1) * 1.15)
    ax.set_xlabel("week starting (UTC)")
    ax.spines[["top"]].set_visible(False)

    lead = ax.twinx()
    hours = [_hours(w.lead_time_median_s) for w in keys.weeks]
    lead.plot(xs, hours, color=LEAD_TIME, marker="o", linewidth=2)
    lead.set_ylabel("lead time, median (hours)", color=LEAD_TIME)
    lead.tick_params(axis="y", colors=LEAD_TIME)
    known = [h for h in hours if h == h]  # NaN is a week with no completed deployment
    lead.set_ylim(0, max(known, default=1.0) * 1.2 or 1.0)
    lead.spines[["top"]].set_visible(False)

    fig.legend(
        handles=[
            Patch(color=COMPLETED, label="completed"),
            Patch(color=FAILED, label="failed, rolled back or aborted"),
            *lead.get_lines()[:1],
        ],
        labels=[
            "completed",
            "failed, rolled back or aborted",
            f"lead time, median ({keys.lead_time_source})",
        ],
        loc="outside lower center",
        ncols=3,
        fontsize="small",
        frameon=False,
    )
    span = f"{keys.since:%d %b %Y} to {keys.until:%d %b %Y}"
    ax.set_title(title or f"{keys.target}: deployments per week, {span}", loc="left")
    if not keys.weeks:
        ax.text(0.5, 0.5, "no deployments in this window", ha="center", transform=ax.transAxes)
    out = io.BytesIO()
    fig.savefig(out, format="png")  # Agg: no display, no GUI toolkit
    return out.getvalue()
