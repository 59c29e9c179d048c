"""Targets from deploybot.toml or the environment: loading, defaults, and every start-up error."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from bot.errors import DeployRefused
from bot.settings import Settings
from bot.target import Target
from bot.targets import BadConfig, Targets, UnknownTarget, _TargetTable, load_targets

ROOT = Path(__file__).resolve().parents[2]
TARGET_VARS = (
    "DEPLOYBOT_CONFIG",
    "DEPLOYBOT_CONFIG_TEXT",
    "DEPLOY_TARGET",
    "STACK_NAME",
    "ECS_CLUSTER",
    "ECS_SERVICE",
    "ECR_REPOSITORY",
    "ECS_CONTAINER",
    "DEPLOY_TABLE",
    "DEPLOY_ALLOWED_USERS",
    "DEPLOY_ALLOWED_CHANNELS",
)

TWO_TARGETS = """
[targets.staging]
cluster = "hello-world-ecr-ecs-fargate-staging"
service = "hello-world-ecr-ecs-fargate-staging"
repository = "hello-world-ecr-ecs-fargate"
channels = ["C0STAGING", "C0DEPLOYS"]

[targets.production]
cluster = "hello-world-ecr-ecs-fargate"
service = "hello-world-ecr-ecs-fargate"
repository = "hello-world-ecr-ecs-fargate"
container = "hello-world"
after = "staging"
deployers = ["U0ANA", "U0BEN"]
channels = ["C0DEPLOYS"]
freeze_after_failure = true
approvals = 1
approvers = ["U0CARA", "U0DAN"]
approval_expiry_minutes = 15
windows = ["Mon-Thu 09:00-16:00 Europe/Madrid", "Fri 09:00-12:00 Europe/Madrid"]
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of the machine's (nor a .env) decides what these tests see."""
    for name in TARGET_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str, name: str = "deploybot.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path: Path, text: str, **overrides: object) -> list[str]:
    write(tmp_path, text)
    with pytest.raises(BadConfig) as caught:
        load_targets(settings(deploybot_config="deploybot.toml", **overrides))
    assert caught.value.exit_code == 2
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


# --- no file: the variables are one target ------------------------------------------------


def test_without_a_file_the_environment_is_one_target_named_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STACK_NAME", "shop")
    monkeypatch.setenv("DEPLOY_ALLOWED_USERS", "U0ANA,U0BEN")
    monkeypatch.setenv("DEPLOY_ALLOWED_CHANNELS", "C0DEPLOYS")
    base = settings()
    targets = load_targets(base)
    assert targets.names == ("production",)
    assert targets.source is None
    only = targets.default
    assert only == Target(
        name="production",
        cluster="shop",
        service="shop",
        repository="shop",
        deployers=frozenset({"U0ANA", "U0BEN"}),
        channels=frozenset({"C0DEPLOYS"}),
    )
    assert not only.guarded
    # Nothing changes for a single-service team: the target's settings are the base's.
    assert only.settings(base) == base
    assert targets.get() is targets.get("production") is only
    assert targets.for_channel("C0DEPLOYS") == [only]
    assert targets.for_channel("C0RANDOM") == []


def test_without_a_file_deploy_target_names_the_one_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TARGET", "billing")
    monkeypatch.setenv("ECS_CLUSTER", "payments")
    monkeypatch.setenv("ECS_CONTAINER", "app")
    targets = load_targets(settings())
    assert targets.names == ("billing",)
    assert (targets.default.cluster, targets.default.container) == ("payments", "app")


def test_an_empty_deploy_target_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TARGET", "")
    monkeypatch.setenv("DEPLOYBOT_CONFIG", "")
    assert load_targets(settings()).names == ("production",)


def test_a_bad_deploy_target_name_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TARGET", "my target")
    with pytest.raises(BadConfig, match=r"^DEPLOY_TARGET: 'my target' is not a target name"):
        load_targets(settings())


# --- the file ------------------------------------------------------------------------------


def test_two_targets_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_ALLOWED_USERS", "U0ALL")
    monkeypatch.setenv("DEPLOY_TABLE", "shared-deployments")
    write(tmp_path, TWO_TARGETS)
    monkeypatch.setenv("DEPLOYBOT_CONFIG", "deploybot.toml")
    base = settings()
    targets = load_targets(base)
    assert targets.names == ("staging", "production")  # the file's order
    assert targets.source == "deploybot.toml"
    assert targets.default.name == "production"  # DEPLOY_TARGET's default
    staging, production = targets.get("staging"), targets.get("production")
    assert staging.deployers == frozenset({"U0ALL"})  # DEPLOY_ALLOWED_USERS by default
    assert production.deployers == frozenset({"U0ANA", "U0BEN"})
    assert (production.after, production.approvals, production.approvers) == (
        "staging",
        1,
        ("U0CARA", "U0DAN"),
    )
    assert production.freeze_after_failure and production.guarded and not staging.guarded
    assert production.approval_expiry.total_seconds() == 15 * 60
    assert [w.text for w in production.windows] == [
        "Mon-Thu 09:00-16:00 Europe/Madrid",
        "Fri 09:00-12:00 Europe/Madrid",
    ]
    assert targets.for_channel("C0DEPLOYS") == [staging, production]
    assert targets.for_channel("C0STAGING") == [staging]
    assert targets.for_channel("C0RANDOM") == []
    assert targets.promotions_from("staging") == [production]
    assert targets.promotions_from("production") == []
    assert targets.direct() == [staging]
    assert production.may_deploy("U0ANA") and not production.may_deploy("U0ALL")
    assert production.may_approve("U0CARA") and not production.may_approve("U0ANA")


def test_a_targets_settings_point_at_its_service_and_share_the_table(tmp_path: Path) -> None:
    write(tmp_path, TWO_TARGETS)
    base = settings(deploybot_config="deploybot.toml", deploy_table="shared-deployments")
    targets = load_targets(base)
    staging = targets.get("staging").settings(base)
    production = targets.get("production").settings(base)
    assert (staging.ecs_cluster, staging.ecs_service, staging.ecr_repository) == (
        "hello-world-ecr-ecs-fargate-staging",
        "hello-world-ecr-ecs-fargate-staging",
        "hello-world-ecr-ecs-fargate",
    )
    assert (staging.ecs_container, production.ecs_container) == (None, "hello-world")
    assert staging.deploy_target == "staging" and production.deploy_target == "production"
    assert staging.deploy_table == production.deploy_table == "shared-deployments"
    assert production.deploy_allowed_users == frozenset({"U0ANA", "U0BEN"})
    assert production.deploy_allowed_channels == frozenset({"C0DEPLOYS"})
    assert base.ecs_cluster == "hello-world-ecr-ecs-fargate"  # the base is untouched
    assert staging.aws_region == base.aws_region and staging.secret("slack_bot_token") is None


def test_deploy_target_names_the_default_among_the_files(tmp_path: Path) -> None:
    write(tmp_path, TWO_TARGETS)
    targets = load_targets(settings(deploybot_config="deploybot.toml", deploy_target="staging"))
    assert targets.default.name == "staging"


def test_one_target_in_the_file_is_the_default_whatever_its_name(tmp_path: Path) -> None:
    write(tmp_path, '[targets.qa]\ncluster = "c"\nservice = "s"\nrepository = "r"\n')
    assert load_targets(settings(deploybot_config="deploybot.toml")).default.name == "qa"


def test_deploy_target_must_be_one_of_the_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path, TWO_TARGETS, deploy_target="prod") == [
        "DEPLOY_TARGET: no target named 'prod' in deploybot.toml (known: staging, production)"
    ]
    several = TWO_TARGETS.replace("[targets.production]", "[targets.live]").replace(
        'after = "staging"', ""
    )
    assert problems_of(tmp_path, several) == [
        "DEPLOY_TARGET: unset, and deploybot.toml has no target named 'production': set it to "
        "the default target, one of staging, live"
    ]


def test_unknown_target_is_a_refusal_naming_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, TWO_TARGETS)
    targets = load_targets(settings(deploybot_config="deploybot.toml"))
    with pytest.raises(UnknownTarget) as caught:
        targets.get("stagin")
    assert str(caught.value) == (
        "no target named 'stagin' (known: staging, production); did you mean staging?"
    )
    assert isinstance(caught.value, DeployRefused) and caught.value.exit_code == 2
    assert caught.value.known == ("staging", "production")
    with pytest.raises(
        UnknownTarget, match=r"^no target named 'qa' \(known: staging, production\)$"
    ):
        targets.get("qa")
    assert targets.get("Production").name == "production"


def test_targets_refuses_a_default_that_is_not_a_target() -> None:
    with pytest.raises(ValueError, match="default target 'qa'"):
        Targets((Target("a", "c", "s", "r"),), "qa")


BASE = """
[targets.staging]
cluster = "c-staging"
service = "s-staging"
repository = "r"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'after = "stagin"\n',
            [
                "deploybot.toml: targets.production.after: no target named 'stagin' "
                "(known: staging, production)"
            ],
        ),
        (
            BASE + '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'after = "production"\n',
            ["deploybot.toml: targets.production.after: a target cannot come after itself"],
        ),
        (
            BASE.replace('repository = "r"', 'repository = "r"\nafter = "production"')
            + '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'after = "staging"\n',
            [
                "deploybot.toml: targets.staging.after: promotion goes round in a circle "
                "(staging → production → staging)",
                "deploybot.toml: targets.production.after: promotion goes round in a circle "
                "(production → staging → production)",
            ],
        ),
        (
            BASE + '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "other"\n'
            'after = "staging"\n',
            [
                "deploybot.toml: targets.production.after: staging runs images of 'r', production "
                "of 'other'; promotion deploys the same image, so one repository"
            ],
        ),
        (
            BASE + '[targets.production]\ncluster = "c-staging"\nservice = "s-staging"\n'
            'repository = "r"\n',
            [
                "deploybot.toml: targets.production: cluster 'c-staging', service 's-staging' "
                "is already targets.staging (a service is one target: one lock, one history)"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\n',
            [
                "deploybot.toml: targets.production.repository: missing (every target names its "
                "cluster, service and repository)"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\nafterr = "x"\n',
            [
                "deploybot.toml: targets.production.afterr: unknown key (known: cluster, service, "
                "repository, container, after, deployers, channels, freeze_after_failure, "
                "approvals, approvers, approval_expiry_minutes, windows, queue_limit, digest"
                # the keys each issue adds after these, in _TargetTable's order
                + "".join(f", {k}" for k in list(_TargetTable.model_fields)[14:])
                + ")"
            ],
        ),
        (
            '[target.production]\ncluster = "c"\n',
            [
                "deploybot.toml: targets: no targets; add a [targets.NAME] table for each service",
                "deploybot.toml: target: unknown key (the file holds [targets.NAME] tables)",
            ],
        ),
        (
            "targets = {}\n",
            ["deploybot.toml: targets: no targets; add a [targets.NAME] table for each"],
        ),
        (
            '[targets.production]\ncluster = ""\nservice = "s"\nrepository = "r"\n',
            [
                "deploybot.toml: targets.production.cluster: String should have at least 1 "
                "character (got '')"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'approvals = 3\napprovers = ["U0A", "U0B", "U0C"]\n',
            ["deploybot.toml: targets.production.approvals: Input should be 0, 1 or 2 (got 3)"],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'approvals = "1"\n',
            ["deploybot.toml: targets.production.approvals: Input should be 0, 1 or 2 (got '1')"],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'approvals = 2\napprovers = ["U0CARA", "U0CARA"]\n',
            [
                "deploybot.toml: targets.production.approvers: approvals = 2 needs at least "
                "2 approvers, 1 listed"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'approvers = ["U0CARA"]\n',
            [
                "deploybot.toml: targets.production.approvers: listed, but approvals = 0 asks for "
                "none; set approvals"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            "approval_expiry_minutes = 0\n",
            [
                "deploybot.toml: targets.production.approval_expiry_minutes: Input should be "
                "greater than or equal to 1 (got 0)"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'freeze_after_failure = "yes"\n',
            [
                "deploybot.toml: targets.production.freeze_after_failure: Input should be a valid "
                "boolean (got 'yes')"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'windows = ["Mon-Thu 09:00-16:00 Europe/Madrid", "Fri 9-12 Europe/Madrid"]\n',
            [
                "deploybot.toml: targets.production.windows.1: window 'Fri 9-12 Europe/Madrid': "
                "'9' is not a time; hours are HH:MM-HH:MM, e.g. 09:00-16:00"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'windows = "Mon-Thu 09:00-16:00 Europe/Madrid"\n',
            [
                "deploybot.toml: targets.production.windows: Input should be a valid list "
                "(got 'Mon-Thu 09:00-16:00 Europe/Madrid')"
            ],
        ),
        (
            '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
            'deployers = ["U0ANA", "@ben"]\nchannels = ["#deploys"]\n',
            [
                "deploybot.toml: targets.production.deployers.1: '@ben' is a name, not a Slack "
                "user id (U…, from their profile → ⋮ → Copy member ID)",
                "deploybot.toml: targets.production.channels.0: '#deploys' is a name, not a Slack "
                "channel id (C…, at the bottom of the channel's About tab)",
            ],
        ),
        (
            '[targets."prod env"]\ncluster = "c"\nservice = "s"\nrepository = "r"\n',
            [
                "deploybot.toml: targets.prod env: 'prod env' is not a target name (letters, "
                "digits, - and _)"
            ],
        ),
    ],
)
def test_configuration_problems_name_the_file_and_the_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert problems_of(tmp_path, text) == expected


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
    [targets.staging]
    cluster = "c-staging"
    service = "s-staging"
    repository = "r"
    windows = ["Mon-Thr 09:00-16:00 Europe/Madrid"]

    [targets.production]
    cluster = "c"
    service = "s"
    repository = "r"
    after = "stagin"
    approvals = 1
    """
    assert problems_of(tmp_path, text) == [
        "deploybot.toml: targets.staging.windows.0: window 'Mon-Thr 09:00-16:00 Europe/Madrid': "
        "no day 'Thr' (days are Mon Tue Wed Thu Fri Sat Sun)",
        "deploybot.toml: targets.production.approvers: approvals = 1 needs at least 1 approver, "
        "0 listed",
        "deploybot.toml: targets.production.after: no target named 'stagin' "
        "(known: staging, production)",
    ]


def test_one_reading_reports_type_errors_and_every_other_problem(tmp_path: Path) -> None:
    """A wrong type in one table does not hide the rest: the windows, the ids and the `after`
    of every table, and the keys around them, come in the same reading (#29: the first run
    showed 5 of 11 problems, the next run the other 6)."""
    text = """
    colour = "blue"

    [targets.staging]
    cluster = "c-staging"
    service = "s-staging"
    repository = "r"
    approvals = "1"
    windows = ["Mon-Thr 09:00-16:00 Europe/Madrid"]
    deployers = ["somebody"]

    [targets.production]
    cluster = "c"
    service = "s"
    repository = "r"
    after = "stagin"
    approvals = 1
    approvers = ["ana"]
    deployers = ["U0ANA", "*"]
    """
    assert problems_of(tmp_path, text) == [
        "deploybot.toml: colour: unknown key (the file holds [targets.NAME] tables)",
        "deploybot.toml: targets.staging.approvals: Input should be 0, 1 or 2 (got '1')",
        "deploybot.toml: targets.staging.windows.0: window 'Mon-Thr 09:00-16:00 Europe/Madrid': "
        "no day 'Thr' (days are Mon Tue Wed Thu Fri Sat Sun)",
        "deploybot.toml: targets.staging.deployers.0: 'somebody' is not a Slack user id: use "
        "ids, not names (U…, from their profile → ⋮ → Copy member ID)",
        "deploybot.toml: targets.production.approvers.0: 'ana' is not a Slack user id: use ids, "
        "not names (U…, from their profile → ⋮ → Copy member ID)",
        "deploybot.toml: targets.production.after: no target named 'stagin' "
        "(known: staging, production)",
    ]


def test_a_file_that_is_not_toml_or_not_there(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[targets.production\ncluster = 1\n")[0].startswith(
        "deploybot.toml: not valid TOML: "
    )
    with pytest.raises(BadConfig, match=r"^nowhere.toml: does not exist \(DEPLOYBOT_CONFIG"):
        load_targets(settings(deploybot_config="nowhere.toml"))
    with pytest.raises(BadConfig, match=r"is a directory"):
        load_targets(settings(deploybot_config=str(tmp_path)))


def test_the_file_is_the_only_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable reaches the file's model: TARGETS in the environment changes nothing."""
    monkeypatch.setenv("TARGETS", '{"evil": {"cluster": "x", "service": "x", "repository": "x"}}')
    write(tmp_path, TWO_TARGETS)
    assert load_targets(settings(deploybot_config="deploybot.toml")).names == (
        "staging",
        "production",
    )


def test_the_example_file_loads() -> None:
    targets = load_targets(settings(deploybot_config=str(ROOT / "deploybot.example.toml")))
    assert targets.names == ("staging", "production")
    production = targets.get("production")
    assert production.after == "staging" and production.approvals == 1 and production.windows


def test_the_operations_guides_file_loads(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "OPERATIONS.md").read_text()
    block = guide.split("```toml\n", 1)[1].split("```", 1)[0]
    write(tmp_path, block)
    targets = load_targets(settings(deploybot_config="deploybot.toml"))
    assert targets.names == ("staging", "production")
    assert targets.get("production").approvers == ("U0CARA", "U0DAN")


def test_the_files_text_in_a_variable_reads_the_same(tmp_path: Path) -> None:
    """DEPLOYBOT_CONFIG_TEXT (what bot.yml passes from its SSM parameter) is read as the file
    is, problems named after the variable; blank or comments only is "not set"."""
    text = (ROOT / "deploybot.example.toml").read_text()
    from_file = load_targets(settings(deploybot_config=str(ROOT / "deploybot.example.toml")))
    from_text = load_targets(settings(deploybot_config_text=text))
    assert [replace(t, source=None) for t in from_text] == [
        replace(t, source=None) for t in from_file
    ]
    assert from_text.default.name == from_file.default.name
    assert from_text.source == "DEPLOYBOT_CONFIG_TEXT"

    placeholder = "# deploybot.toml: only comments, one target from the environment\n"
    for unset in (placeholder, "", "  \n"):
        targets = load_targets(settings(deploybot_config_text=unset))
        assert targets.names == ("production",) and targets.source is None

    with pytest.raises(BadConfig) as bad:
        load_targets(settings(deploybot_config_text="[targets.production\n"))
    assert bad.value.problems[0].startswith("DEPLOYBOT_CONFIG_TEXT: not valid TOML: ")
    with pytest.raises(BadConfig) as bad:
        load_targets(settings(deploybot_config_text="[targets.production]\ncluster = 'c'\n"))
    assert bad.value.problems[0].startswith("DEPLOYBOT_CONFIG_TEXT: targets.production.")
    write(tmp_path, TWO_TARGETS)
    with pytest.raises(BadConfig) as bad:
        load_targets(settings(deploybot_config="deploybot.toml", deploybot_config_text=text))
    assert bad.value.problems == (
        "DEPLOYBOT_CONFIG and DEPLOYBOT_CONFIG_TEXT are both set: set one of them",
    )


def test_a_targets_alarms_are_names_kept_once_in_order(tmp_path: Path) -> None:
    base = '[targets.production]\ncluster = "c"\nservice = "s"\nrepository = "r"\n'
    write(tmp_path, base + 'alarms = ["b-5xx", "a-latency", "b-5xx"]\n')
    target = load_targets(settings(deploybot_config="deploybot.toml")).get("production")
    assert target.alarms == ("b-5xx", "a-latency")
    assert problems_of(tmp_path, base + 'alarms = ["ok", "", " padded"]\n') == [
        "deploybot.toml: targets.production.alarms.1: '' is not a CloudWatch alarm name (1 to "
        "255 characters, no spaces around it)",
        "deploybot.toml: targets.production.alarms.2: ' padded' is not a CloudWatch alarm name "
        "(1 to 255 characters, no spaces around it)",
    ]
    assert problems_of(tmp_path, base + 'alarms = "hello-world-5xx"\n') == [
        "deploybot.toml: targets.production.alarms: Input should be a valid list "
        "(got 'hello-world-5xx')"
    ]
