"""The CI/CD diagram shows the release workflow's real job graph; the committed one is current."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    path = ROOT / "tools" / "generate_workflows_diagram.py"
    spec = importlib.util.spec_from_file_location("generate_workflows_diagram", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def workflow_needs(text: str) -> set[tuple[str, str]]:
    """Read ``needs:`` straight from the YAML, independently of the tool."""
    jobs = yaml.safe_load(text)["jobs"]
    edges = set()
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            edges.add((need, name))
    return edges


def test_the_workflow_has_the_promised_order() -> None:
    assert workflow_needs(WORKFLOW.read_text()) == {
        ("lint", "build"),
        ("test", "build"),
        ("build", "release"),
        ("lint", "docker"),
        ("test", "docker"),
    }


def test_committed_drawio_shows_the_workflows_needs(gen: ModuleType) -> None:
    drawn = gen.drawio_job_edges((DOCS / "cicd-architecture.drawio").read_text())
    assert drawn == workflow_needs(WORKFLOW.read_text())


def test_committed_files_are_what_the_tool_makes_now(gen: ModuleType, tmp_path: Path) -> None:
    gen.generate(WORKFLOW, tmp_path)
    fresh = (tmp_path / "cicd-architecture.drawio").read_text()
    assert fresh == (DOCS / "cicd-architecture.drawio").read_text(), "run `make diagram`"
    committed, made = (
        Image.open(DOCS / "cicd-architecture.png"),
        Image.open(tmp_path / gen.PNG_NAME),
    )
    assert committed.size == made.size, "run `make diagram`"


def test_a_changed_workflow_changes_the_drawing(gen: ModuleType, tmp_path: Path) -> None:
    text = WORKFLOW.read_text().replace("needs: [build]", "needs: [build, docker]")
    assert text != WORKFLOW.read_text()
    changed = tmp_path / "release.yml"
    changed.write_text(text)
    gen.generate(changed, tmp_path)
    drawn = gen.drawio_job_edges((tmp_path / "cicd-architecture.drawio").read_text())
    assert ("docker", "release") in drawn
    assert drawn == workflow_needs(text)


def test_ecr_and_the_manual_deploy_are_drawn(gen: ModuleType) -> None:
    d = gen.build_diagram(gen.load_workflow(WORKFLOW))
    ids = {n.id for n in d.nodes}
    assert {"ext-ecr", "ext-ecs", "ext-deploybot", "ext-slack", "ext-gh-release"} <= ids
    edges = {(e.source, e.target, e.kind) for e in d.edges}
    assert ("job-docker", "ext-ecr", "flow") in edges
    assert ("ext-deploybot", "ext-ecs", "manual") in edges


def test_the_role_ci_assumes_and_the_variables_defaults_are_drawn(gen: ModuleType) -> None:
    d = gen.build_diagram(gen.load_workflow(WORKFLOW))
    nodes = {n.id: n for n in d.nodes}
    edges = {(e.source, e.target, e.label) for e in d.edges}
    assert ("job-docker", "ext-iam", "assume") in edges
    # STACK_NAME is `${{ vars.STACK_NAME || '...' }}`: the picture names the default.
    assert nodes["ext-ecr"].detail == "hello-world-ecr-ecs-fargate\nhello-world-ecr-ecs-fargate-bot"
    assert "environment: release" in nodes["job-docker"].detail
    assert gen.shown_value("${{ vars.X || 'eu-west-1' }}") == "eu-west-1"
    assert gen.shown_value("plain") == "plain"


def test_a_cycle_is_refused(gen: ModuleType) -> None:
    wf = {"jobs": {"a": {"needs": "b"}, "b": {"needs": ["a"]}}}
    with pytest.raises(ValueError, match="cycle"):
        gen.build_diagram(wf)
