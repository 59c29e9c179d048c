"""The stats chart: a PNG that opens, its bars and line drawn from the FourKeys it is given."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

from PIL import Image

from bot import chart
from bot.deploy.stats import FourKeys, WeekBar


def keys(weeks: list[tuple[int, int, float | None]], target: str = "production") -> FourKeys:
    start = date(2026, 10, 5)
    bars = tuple(
        WeekBar(start + timedelta(weeks=i), done, failed, lead)
        for i, (done, failed, lead) in enumerate(weeks)
    )
    return FourKeys(
        target=target,
        since=datetime(2026, 10, 5, tzinfo=UTC),
        until=datetime(2026, 10, 5, tzinfo=UTC) + timedelta(weeks=len(weeks)),
        deployments=sum(d + f for d, f, _ in weeks),
        frequency_per_week=sum(d for d, _, _ in weeks) / max(len(weeks), 1),
        lead_time_median_s=3600.0,
        lead_time_p90_s=7200.0,
        lead_time_source="commits",
        change_failure_rate=None,
        time_to_restore_median_s=None,
        bands={},
        weeks=bars,
    )


def colours(data: bytes) -> dict[tuple[int, int, int], int]:
    image = Image.open(io.BytesIO(data))
    image.load()
    counts: dict[tuple[int, int, int], int] = {}
    for count, pixel in image.convert("RGB").getcolors(maxcolors=1 << 20) or []:
        counts[pixel] = count
    return counts


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_the_chart_is_a_png_that_opens_with_both_bars_and_the_line() -> None:
    data = chart.png(keys([(5, 1, 7200.0), (3, 0, 3600.0), (0, 2, None), (6, 1, 1800.0)]))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (900, 450)
    seen = colours(data)
    # Bars are solid fills: thousands of pixels of each colour; the line is thinner.
    assert seen.get(rgb(chart.COMPLETED), 0) > 2000, "no completed bars drawn"
    assert seen.get(rgb(chart.FAILED), 0) > 1000, "no failed bars drawn"
    assert seen.get(rgb(chart.LEAD_TIME), 0) > 200, "no lead-time line drawn"


def column(data: bytes, colour: str) -> list[int]:
    """The rows of ``colour`` in the middle column of the picture's one bar."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    want = rgb(colour)
    rows = [
        [x for x in range(image.width) if image.getpixel((x, y)) == want]
        for y in range(0, image.height, 5)
    ]
    xs = max(rows, key=len)  # the bar's widest row, not the legend's swatch
    middle = xs[len(xs) // 2]
    return [y for y in range(image.height) if image.getpixel((middle, y)) == want]


def test_failed_are_stacked_on_completed_in_proportion() -> None:
    data = chart.png(keys([(3, 1, None)]))  # no line across the bar
    green, red = column(data, chart.COMPLETED), column(data, chart.FAILED)
    assert red and green
    assert max(red) < min(green), "failed must sit on top of completed"
    assert abs(len(green) / len(red) - 3) < 0.1, (len(green), len(red))


def test_weeks_without_failures_draw_no_red_bar() -> None:
    calm = colours(chart.png(keys([(2, 0, 3600.0), (2, 0, 3600.0)])))
    assert calm.get(rgb(chart.FAILED), 0) < 300  # the legend's swatch only


def test_an_empty_window_still_draws() -> None:
    data = chart.png(keys([]))
    assert Image.open(io.BytesIO(data)).size == (900, 450)
