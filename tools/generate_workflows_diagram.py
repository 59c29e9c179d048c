"""Draw the CI/CD architecture (docs/cicd-architecture.png and .drawio) from the release workflow.

The jobs and their arrows come from the workflow's own ``needs:``; what each job talks to
(ECR, the GitHub release, Slack) comes from the actions and commands in its steps. So the
picture cannot drift from the workflow: regenerate it with ``make diagram``.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
OUT_DIR = ROOT / "docs"
PNG_NAME, DRAWIO_NAME = "cicd-architecture.png", "cicd-architecture.drawio"

# Geometry, in pixels of the PNG (draw.io uses the same numbers).
BOX_W, BOX_H = 230, 78
COL_GAP, ROW_GAP = 130, 44
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 40, 110, 90

# kind -> (fill, border); the legend lists them in this order.
PALETTE: dict[str, tuple[str, str]] = {
    "trigger": ("#fff2cc", "#d6b656"),
    "job": ("#dae8fc", "#6c8ebf"),
    "aws": ("#ffe6cc", "#d79b00"),
    "external": ("#f5f5f5", "#666666"),
    "manual": ("#d5e8d4", "#82b366"),
}
LEGEND = {
    "trigger": "trigger",
    "job": "workflow job",
    "aws": "AWS",
    "external": "GitHub / Slack",
    "manual": "manual deploy (deploybot)",
}


@dataclass(frozen=True)
class Node:
    """A box: ``id`` is ``job-<name>`` for a workflow job, ``ext-<name>`` otherwise."""

    id: str
    title: str
    detail: str
    kind: str


@dataclass(frozen=True)
class Edge:
    """An arrow. ``kind`` is ``needs`` (a job dependency), ``flow`` or ``manual`` (dashed)."""

    source: str
    target: str
    label: str
    kind: str


@dataclass(frozen=True)
class Diagram:
    """Nodes, edges and where each node sits (column, row; rows may be fractional)."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    places: Mapping[str, tuple[int, float]]


def load_workflow(path: Path) -> dict[str, Any]:
    """The workflow file as data."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise ValueError(f"{path} has no jobs")
    return data


def needs_of(job: Mapping[str, Any]) -> list[str]:
    """A job's ``needs:`` as a list (it may be a single string)."""
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _steps_text(job: Mapping[str, Any]) -> str:
    return "\n".join(f"{s.get('uses', '')}\n{s.get('run', '')}" for s in job.get("steps", []))


# `${{ vars.NAME || 'fallback' }}`: a repository variable with a default (release.yml's env).
_VARIABLE_WITH_DEFAULT = re.compile(r"^\$\{\{\s*vars\.\w+\s*\|\|\s*'([^']*)'\s*\}\}$")


def shown_value(value: object) -> str:
    """An env value as the picture shows it: a variable's default, or the value itself."""
    text = str(value)
    match = _VARIABLE_WITH_DEFAULT.match(text.strip())
    return match.group(1) if match else text


def _assumes_a_role(job: Mapping[str, Any]) -> bool:
    """Whether a job gets AWS credentials by assuming a role (GitHub's OIDC token)."""
    return any(
        "configure-aws-credentials" in s.get("uses", "") and "role-to-assume" in s.get("with", {})
        for s in job.get("steps", [])
    )


def build_diagram(workflow: Mapping[str, Any]) -> Diagram:
    """The whole picture: trigger, jobs (from ``needs:``), what they produce, the manual deploy."""
    jobs: Mapping[str, Any] = workflow["jobs"]
    env = workflow.get("env", {})
    stack = shown_value(env.get("STACK_NAME", "the stack"))
    nodes: list[Node] = [
        Node(
            "ext-trigger",
            "git push tag",
            "v*-ecr-ecs-fargate\nor workflow_dispatch on a tag",
            "trigger",
        )
    ]
    edges: list[Edge] = []
    for name, job in jobs.items():
        nodes.append(Node(f"job-{name}", name, _job_detail(job), "job"))
        for need in needs_of(job):
            edges.append(Edge(f"job-{need}", f"job-{name}", "", "needs"))
        if not needs_of(job):
            edges.append(Edge("ext-trigger", f"job-{name}", "", "flow"))

    # What the jobs talk to, found in their steps.
    ecr_jobs = [n for n, j in jobs.items() if "amazon-ecr-login" in _steps_text(j)]
    release_jobs = [n for n, j in jobs.items() if "action-gh-release" in _steps_text(j)]
    notify_jobs = [n for n, j in jobs.items() if "deploybot notify" in _steps_text(j)]
    if release_jobs:
        nodes.append(Node("ext-gh-release", "GitHub Release", "wheel + sdist (dist/*)", "external"))
        edges += [Edge(f"job-{n}", "ext-gh-release", "files", "flow") for n in release_jobs]
    role_jobs = [n for n, j in jobs.items() if _assumes_a_role(j)]
    if role_jobs:
        detail = "release tags only;\npush to ECR, nothing else"
        nodes.append(Node("ext-iam", "IAM role (OIDC)", detail, "aws"))
        edges += [Edge(f"job-{n}", "ext-iam", "assume", "flow") for n in role_jobs]
    if ecr_jobs:
        nodes.append(
            Node("ext-ecr", "Amazon ECR", f"{stack}\n{stack}-bot", "aws"),
        )
        edges += [Edge(f"job-{n}", "ext-ecr", "push", "flow") for n in ecr_jobs]
    if notify_jobs:
        nodes.append(
            Node("ext-slack", "Slack channel", "image pushed,\nwith a Deploy button", "external")
        )
        edges += [Edge(f"job-{n}", "ext-slack", "notify", "flow") for n in notify_jobs]
    # The deploy itself is manual: a person asks deploybot, from Slack or from a terminal.
    nodes += [
        Node("ext-operator", "operator", "make deploy TAG=...", "manual"),
        Node("ext-deploybot", "deploybot", "lock, task definition,\nwatch the rollout", "manual"),
        Node("ext-ecs", "ECS Fargate", f"{stack}\nwith circuit breaker", "aws"),
    ]
    if notify_jobs:
        edges.append(Edge("ext-slack", "ext-deploybot", "/deploy", "manual"))
    edges += [
        Edge("ext-operator", "ext-deploybot", "", "manual"),
        Edge("ext-deploybot", "ext-ecs", "deploy", "manual"),
    ]
    if ecr_jobs:
        edges.append(Edge("ext-ecr", "ext-ecs", "pull", "flow"))
    return Diagram(tuple(nodes), tuple(edges), _layout(nodes, edges))


def _job_detail(job: Mapping[str, Any]) -> str:
    """One or two short lines: the job's display name (else its last action), its environment."""
    if "name" in job:
        detail = str(job["name"])
    else:
        uses = [s["uses"].split("@")[0].split("/")[-1] for s in job.get("steps", []) if "uses" in s]
        detail = uses[-1] if uses else ""
    environment = job.get("environment")
    if isinstance(environment, Mapping):
        environment = environment.get("name")
    return f"{detail}\nenvironment: {environment}" if environment else detail


def _layout(nodes: Iterable[Node], edges: Iterable[Edge]) -> dict[str, tuple[int, float]]:
    """Columns by longest path from the trigger; rows ordered by their predecessors' rows."""
    ids = [n.id for n in nodes]
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        preds[e.target].append(e.source)
    col: dict[str, int] = {}

    def column(i: str, seen: frozenset[str] = frozenset()) -> int:
        if i in seen:
            raise ValueError(f"the job graph has a cycle through {i}")
        if i not in col:
            col[i] = 1 + max((column(p, seen | {i}) for p in preds[i]), default=-1)
        return col[i]

    for i in ids:
        column(i)
    # The operator stands beside the Slack channel: both are ways of asking deploybot.
    if "ext-operator" in col:
        col["ext-operator"] = col["ext-deploybot"] - 1
    row: dict[str, float] = {}
    for c in range(max(col.values()) + 1):
        members = [i for i in ids if col[i] == c]
        wanted = {
            i: sum(row[p] for p in preds[i] if p in row) / len([p for p in preds[i] if p in row])
            if any(p in row for p in preds[i])
            else float(k)
            for k, i in enumerate(members)
        }
        nxt = 0.0
        for i in sorted(members, key=lambda m: (wanted[m], ids.index(m))):
            row[i] = max(wanted[i], nxt)
            nxt = row[i] + 1
    return {i: (col[i], row[i]) for i in ids}


def _box(place: tuple[int, float]) -> tuple[int, int, int, int]:
    c, r = place
    x = MARGIN_X + c * (BOX_W + COL_GAP)
    y = MARGIN_TOP + round(r * (BOX_H + ROW_GAP))
    return x, y, x + BOX_W, y + BOX_H


def _route(d: Diagram, e: Edge) -> list[tuple[int, int]]:
    """An elbow: out of the source's right side, turn in the gap before the target."""
    _sx0, sy0, sx1, sy1 = _box(d.places[e.source])
    tx0, ty0, _tx1, ty1 = _box(d.places[e.target])
    start, end = (sx1, (sy0 + sy1) // 2), (tx0, (ty0 + ty1) // 2)
    if start[1] == end[1]:
        return [start, end]
    bend = tx0 - COL_GAP // 2
    return [start, (bend, start[1]), (bend, end[1]), end]


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
            if (Path(folder) / name).exists():
                return ImageFont.truetype(str(Path(folder) / name), size)
    return ImageFont.load_default(size=size)


def _dashed(draw: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int], fill: str) -> None:
    (x0, y0), (x1, y1) = a, b
    length = max(abs(x1 - x0), abs(y1 - y0))
    for s in range(0, length, 12):
        t0, t1 = s / length, min(s + 7, length) / length
        p = (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0)
        q = (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1)
        draw.line([p, q], fill=fill, width=2)


def render_png(d: Diagram, path: Path) -> None:
    """Draw the diagram with Pillow."""
    cols = max(c for c, _ in d.places.values()) + 1
    rows = max(r for _, r in d.places.values()) + 1
    width = 2 * MARGIN_X + cols * BOX_W + (cols - 1) * COL_GAP
    height = MARGIN_TOP + round(rows * (BOX_H + ROW_GAP)) + MARGIN_BOTTOM
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    title, small, label = _font(26, bold=True), _font(15), _font(14)
    draw.text(
        (MARGIN_X, 24), "deploybot CI/CD: release.yml, Amazon ECR, ECS Fargate", "#222", title
    )
    draw.text(
        (MARGIN_X, 62),
        "Drawn from .github/workflows/release.yml (needs:) by tools/generate_workflows_diagram.py."
        "  Solid: automatic.  Dashed: a person deploys, through deploybot.",
        "#555",
        small,
    )
    fan_out = Counter(e.source for e in d.edges if e.label)
    for e in d.edges:
        pts = _route(d, e)
        colour = "#333" if e.kind == "needs" else "#82b366" if e.kind == "manual" else "#777"
        for a, b in itertools.pairwise(pts):
            if e.kind == "manual":
                _dashed(draw, a, b, colour)
            else:
                draw.line([a, b], fill=colour, width=3 if e.kind == "needs" else 2)
        ex, ey = pts[-1]
        draw.polygon([(ex, ey), (ex - 12, ey - 6), (ex - 12, ey + 6)], fill=colour)
        if e.label:
            # Straight arrows: above the line. Elbows: beside their vertical run, in the gap,
            # except where several arrows leave one box (they share that run): above the
            # last run into the target, so each label stays by its own arrow.
            if len(pts) == 2:
                lx, ly = pts[0][0] + 8, pts[0][1] - 20
            elif fan_out[e.source] > 1:
                lx, ly = pts[2][0] + 6, pts[3][1] - 20
            else:
                lx, ly = pts[1][0] + 6, (pts[1][1] + pts[2][1]) // 2 - 9
            tw = draw.textlength(e.label, font=label)
            draw.rectangle([lx - 2, ly, lx + tw + 2, ly + 18], fill="white")
            draw.text((lx, ly), e.label, "#444", label)
    name_font, detail_font = _font(17, bold=True), _font(13)
    for n in d.nodes:
        x0, y0, x1, y1 = _box(d.places[n.id])
        fill, border = PALETTE[n.kind]
        draw.rounded_rectangle([x0, y0, x1, y1], radius=12, fill=fill, outline=border, width=2)
        draw.text(((x0 + x1) // 2, y0 + 8), n.title, "#111", name_font, anchor="ma")
        draw.multiline_text(
            ((x0 + x1) // 2, y0 + 32), n.detail, "#333", detail_font, anchor="ma", align="center"
        )
    x, y = MARGIN_X, height - MARGIN_BOTTOM + 35
    for kind, text in LEGEND.items():
        fill, border = PALETTE[kind]
        draw.rounded_rectangle([x, y, x + 28, y + 20], radius=5, fill=fill, outline=border, width=2)
        draw.text((x + 36, y + 1), text, "#333", small)
        x += 36 + round(draw.textlength(text, font=small)) + 40
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def render_drawio(d: Diagram) -> str:
    """The same diagram as draw.io XML (an uncompressed mxGraphModel), deterministic text."""
    mxfile = ET.Element("mxfile", host="deploybot", type="device")
    diagram = ET.SubElement(mxfile, "diagram", id="cicd", name="CI/CD")
    model = ET.SubElement(diagram, "mxGraphModel", grid="1", gridSize="10", page="0")
    root = ET.SubElement(model, "root")
    ET.SubElement(root, "mxCell", id="0")
    ET.SubElement(root, "mxCell", {"id": "1", "parent": "0"})
    for n in d.nodes:
        fill, border = PALETTE[n.kind]
        x0, y0, x1, y1 = _box(d.places[n.id])
        value = f"<b>{n.title}</b><br>" + n.detail.replace("\n", "<br>")
        style = f"rounded=1;whiteSpace=wrap;html=1;fillColor={fill};strokeColor={border};"
        cell = ET.SubElement(
            root,
            "mxCell",
            {"id": n.id, "value": value, "style": style, "vertex": "1", "parent": "1"},
        )
        geometry = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
        ET.SubElement(
            cell, "mxGeometry", {**{k: str(v) for k, v in geometry.items()}, "as": "geometry"}
        )
    for k, e in enumerate(d.edges):
        style = "edgeStyle=orthogonalEdgeStyle;html=1;endArrow=block;"
        style += "dashed=1;strokeColor=#82b366;" if e.kind == "manual" else ""
        style += "strokeWidth=2;" if e.kind == "needs" else ""
        attrs = {"id": f"edge-{k}-{e.kind}", "value": e.label, "style": style, "edge": "1"}
        attrs |= {"parent": "1", "source": e.source, "target": e.target}
        cell = ET.SubElement(root, "mxCell", attrs)
        ET.SubElement(cell, "mxGeometry", {"relative": "1", "as": "geometry"})
    ET.indent(mxfile)
    return ET.tostring(mxfile, encoding="unicode") + "\n"


def drawio_job_edges(xml_text: str) -> set[tuple[str, str]]:
    """The job-to-job arrows of a draw.io file, as (needed job, job) names."""
    cells = ET.fromstring(xml_text).iter("mxCell")
    return {
        (c.get("source", "").removeprefix("job-"), c.get("target", "").removeprefix("job-"))
        for c in cells
        if c.get("edge") == "1"
        and c.get("source", "").startswith("job-")
        and c.get("target", "").startswith("job-")
    }


def generate(workflow_path: Path = WORKFLOW, out_dir: Path = OUT_DIR) -> tuple[Path, Path]:
    """Write the PNG and the draw.io file; return their paths."""
    d = build_diagram(load_workflow(workflow_path))
    png, drawio = out_dir / PNG_NAME, out_dir / DRAWIO_NAME
    render_png(d, png)
    drawio.write_text(render_drawio(d), encoding="utf-8")
    return png, drawio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workflow", type=Path, default=WORKFLOW)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    for path in generate(args.workflow, args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
