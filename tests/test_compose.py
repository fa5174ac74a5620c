"""docker-compose.yml stays runnable without Docker here: the services of the production stack are there,
and every `pipeline ...` command it runs parses with the real CLI (options and choices exist)."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import yaml

from pipeline.cli import main

COMPOSE = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())


def pipeline_commands(service: str) -> list[list[str]]:
    command = COMPOSE["services"][service]["command"]
    inner = shlex.split(command)[2]  # sh -c "<inner>"
    return [shlex.split(part)[1:] for part in re.split(r"&&", inner) if part.strip().startswith("pipeline ")]


def parses(args: list[str]) -> None:
    """Parse like click does before invoking (raises click's UsageError / BadParameter), run nothing."""
    ctx = main.make_context("pipeline", list(args))
    while isinstance(ctx.command, click.Group):  # walk down to the leaf command, parsing each level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2 renames protected_args
            remaining = ctx.protected_args + ctx.args
        name, sub, rest = ctx.command.resolve_command(ctx, remaining)
        ctx = sub.make_context(name, rest, parent=ctx)


def test_the_production_services_are_there_with_their_ports():
    services = COMPOSE["services"]
    assert set(services) >= {"kafka", "risingwave", "migrate", "executor", "simulator"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["risingwave"]["command"] == "single_node" and "4566:4566" in services["risingwave"]["ports"]
    assert "9000:9000" in services["executor"]["ports"]
    # /status lists the chargers: its port is published on the host's loopback only
    assert "127.0.0.1:9002:9002" in services["executor"]["ports"]
    assert services["executor"]["environment"]["PIPELINE_EXECUTOR__HTTP_HOST"] == "0.0.0.0"
    assert services["executor"]["environment"]["PIPELINE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert services["simulator"]["profiles"] == ["sim"]
    assert services["migrate"]["depends_on"]["risingwave"] == {"condition": "service_healthy"}


def test_every_pipeline_command_in_the_stack_parses():
    seen = []
    for service in ("migrate", "executor", "simulator"):
        for args in pipeline_commands(service):
            parses(args)
            seen.append(args[:2])
    assert ["migrate", "apply"] in seen and ["executor", "--transport"] in seen and ["topics", "create"] in seen
    executor = pipeline_commands("executor")[0]
    assert executor[executor.index("--transport") + 1] == "kafka"
    migrate = next(a for a in pipeline_commands("migrate") if a[:2] == ["migrate", "apply"])
    assert "postgresql://root@risingwave:4566/dev" in migrate and "--yes" in migrate
