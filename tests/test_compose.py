"""docker-compose.yml and the Dockerfile hold what a production stack needs, checked without Docker here:

- every `pipeline ...` command the stack runs parses with the real CLI (options and choices exist);
- no published port listens on every interface but the OCPP port; RisingWave's dashboard and Kafka's
  controller are not published at all;
- every long-running service restarts unless stopped and has a health check of its own readiness, and
  every dependency waits on a condition (healthy, or completed for the one-shot migrate job);
- no secret is in the file: passwords come from compose secrets (files under ./secrets/) through
  ``*_FILE`` variables or the services' own scripts, and Kafka clients log in with SASL/SCRAM;
- the pipeline's services run the image built by the Dockerfile (multi-stage, non-root, dependencies from
  the hashed requirements.lock only, the project with --no-deps), and the lock pins every dependency
  pyproject.toml declares, so the two cannot drift apart silently.

Where a Docker client can, ``docker compose config`` must accept the file and the image must build; both
are skipped with the reason elsewhere (this machine has a client but no daemon).
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import tomllib
import warnings
from pathlib import Path

import click
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCK = (ROOT / "requirements.lock").read_text()
PIPELINE_SERVICES = ("migrate", "executor", "simulator")
ONE_SHOT = {"migrate"}
OCPP = ("executor", 9000)
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|_KEY\b", re.IGNORECASE)


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """``text`` with compose's ``${VAR}``, ``${VAR:-default}`` and ``$$`` resolved against ``env``
    (default: nothing set, so the file's own defaults)."""
    env = env or {}

    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", one, text).replace("$$", "$")


def published(service: str) -> list[tuple[str, int]]:
    """``(host_ip, container_port)`` of each port ``service`` publishes, as compose reads the short
    syntax with the file's defaults (no host IP: every interface, ``0.0.0.0``)."""
    out = []
    for spec in SERVICES[service].get("ports", []):
        parts = interpolate(str(spec)).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((host_ip, int(parts[-1].split("/")[0])))
    return out


def pipeline_commands(service: str) -> list[list[str]]:
    """The ``pipeline`` argument lists ``service`` runs: its command, or each ``pipeline ...`` of a
    ``sh -c`` script."""
    entry, command = SERVICES[service].get("entrypoint"), SERVICES[service]["command"]
    if entry == ["/bin/sh", "-c"]:
        return [shlex.split(part)[1:] for part in command[0].split("&&") if part.strip().startswith("pipeline ")]
    assert entry is None and isinstance(command, list)  # the image's entrypoint is `pipeline`
    return [command]


def parses(args: list[str]) -> None:
    """Parse like click does before invoking (raises click's UsageError / BadParameter), run nothing."""
    ctx = main.make_context("pipeline", list(args))
    while isinstance(ctx.command, click.Group):  # walk down to the leaf command, parsing each level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2 renames protected_args
            remaining = ctx.protected_args + ctx.args
        name, sub, rest = ctx.command.resolve_command(ctx, remaining)
        ctx = sub.make_context(name, rest, parent=ctx)


def test_the_production_services_are_there():
    assert set(SERVICES) >= {"kafka", "risingwave", "migrate", "executor", "simulator"}
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["risingwave"]["image"] == "risingwavelabs/risingwave:v2.8.0"
    assert SERVICES["risingwave"]["command"][0] == "single_node"
    assert SERVICES["simulator"]["profiles"] == ["sim"]
    # /status lists the chargers: its listener is published on the host's loopback only
    assert SERVICES["executor"]["environment"]["PIPELINE_EXECUTOR__HTTP_HOST"] == "0.0.0.0"


def test_every_pipeline_command_in_the_stack_parses():
    seen = []
    for service in PIPELINE_SERVICES:
        for args in pipeline_commands(service):
            parses(args)
            seen.append(args[:2])
    assert ["migrate", "apply"] in seen and ["executor", "--transport"] in seen and ["topics", "create"] in seen
    assert ["migrate", "set-password"] in seen
    executor = pipeline_commands("executor")[0]
    assert executor[executor.index("--transport") + 1] == "kafka"
    migrate = {tuple(a[:2]): a for a in pipeline_commands("migrate")}
    apply, password = migrate[("migrate", "apply")], migrate[("migrate", "set-password")]
    assert "--yes" in apply and apply[apply.index("--sql-dir") + 1] == "/app/sql"
    # root without a password over RisingWave's own loopback only (its HBA file says so), then root's
    # password from the compose secret for every other connection
    assert SERVICES["migrate"]["network_mode"] == "service:risingwave"
    assert (
        apply[apply.index("--target") + 1]
        == password[password.index("--target") + 1]
        == ("postgresql://root@127.0.0.1:4566/dev")
    )
    assert password[2] == "root" and password[password.index("--password-file") + 1] == (
        "/run/secrets/risingwave_root_password"
    )
    hba = tomllib.loads((ROOT / "deploy" / "risingwave" / "risingwave.toml").read_text())
    trust, md5 = hba["frontend"]["hba_config"]["entries"]
    assert (trust["users"], trust["addresses"], trust["auth_method"]) == (
        ["root"],
        ["127.0.0.1/32", "::1/128"],
        "trust",
    )
    assert (md5["users"], md5["addresses"], md5["auth_method"]) == (["all"], ["0.0.0.0/0", "::/0"], "md5")


def test_no_port_is_published_on_every_interface_but_the_ocpp_port():
    every = [(name, ip, port) for name in SERVICES for ip, port in published(name) if ip != "127.0.0.1"]
    assert every == [(OCPP[0], "0.0.0.0", OCPP[1])]
    assert published("kafka") == [("127.0.0.1", 9092)]  # SASL; the controller (9093) stays inside
    assert published("risingwave") == [("127.0.0.1", 4566)]  # not the dashboard (5691): no login there
    assert published("executor") == [("0.0.0.0", 9000), ("127.0.0.1", 9002)]  # OCPP; status and metrics
    assert not any(published(name) for name in ("migrate", "simulator"))
    kafka = interpolate(SERVICES["kafka"]["ports"][0], {"PUBLISH_ADDRESS": "10.0.0.5", "KAFKA_PORT": "19092"})
    assert kafka == "10.0.0.5:19092:9092"  # another address is a deliberate choice, with SASL still on


def test_every_long_running_service_restarts_and_checks_its_own_health():
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no" and "healthcheck" not in service
            continue
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] == "CMD" and not service["healthcheck"].get("disable"), name
    kafka = SERVICES["kafka"]["healthcheck"]["test"]
    assert kafka[1].endswith("kafka-broker-api-versions.sh") and "--command-config" in kafka  # a SASL login
    assert "/dev/tcp/127.0.0.1/4566" in SERVICES["risingwave"]["healthcheck"]["test"][-1]  # Postgres SSLRequest
    assert "http://127.0.0.1:9000/healthz" in SERVICES["executor"]["healthcheck"]["test"][-1]
    assert "/proc/net/tcp" in SERVICES["simulator"]["healthcheck"]["test"][-1]  # holds a websocket to the executor


def test_every_dependency_waits_on_a_condition():
    wanted = {
        "kafka": "service_healthy",
        "risingwave": "service_healthy",
        "executor": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for dependency, how in depends.items():
            assert how == {"condition": wanted[dependency]}, (name, dependency)
    assert set(SERVICES["executor"]["depends_on"]) == {"kafka", "migrate"}
    assert set(SERVICES["migrate"]["depends_on"]) == {"kafka", "risingwave"}


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else dict(env)


def test_no_secret_is_in_the_compose_file():
    declared = COMPOSE["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"} and secret["file"] == f"./secrets/{name}", name
    for name, service in SERVICES.items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for key, value in _environment(service).items():
            if SECRET_WORDS.search(key):
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), (name, key)
                assert value.removeprefix("/run/secrets/") in mounted, (name, key)
        for text in (str(service.get("command", "")), str(service.get("healthcheck", ""))):
            for path in re.findall(r"/run/secrets/(\w+)", text):
                assert path in mounted, (name, path)
    literal = re.compile(r"(?i)(password|secret|token)[ \t]*[=:][ \t]*['\"]?\w")  # `name: value` on one line
    assert not literal.search(interpolate(COMPOSE_TEXT).replace("_FILE:", ""))
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    start = (ROOT / "deploy" / "kafka" / "start.sh").read_text()
    assert "$(password kafka_admin_password)" in start and "$(password kafka_pipeline_password)" in start
    assert set(SERVICES["kafka"]["secrets"]) == {"kafka_admin_password", "kafka_pipeline_password"}


def test_kafka_clients_log_in_with_scram_and_kafka_takes_nothing_else():
    for name in ("migrate", "executor"):
        env = _environment(SERVICES[name])
        assert env["PIPELINE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["PIPELINE_KAFKA__SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["PIPELINE_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["PIPELINE_KAFKA__SASL_PASSWORD_FILE"] == "/run/secrets/kafka_pipeline_password"
    start = (ROOT / "deploy" / "kafka" / "start.sh").read_text()
    protocols = re.search(r"^listener\.security\.protocol\.map=(.*)$", start, re.MULTILINE).group(1)
    assert protocols == "INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert "CONTROLLER://127.0.0.1:" in start  # the plaintext listener is the container's loopback only
    assert re.search(r"^sasl\.enabled\.mechanisms=SCRAM-SHA-512$", start, re.MULTILINE)


def test_the_pipeline_services_run_the_image_not_the_checkout():
    for name in PIPELINE_SERVICES:
        service = SERVICES[name]
        assert service["build"] == "." and service["image"].startswith("${PIPELINE_IMAGE:-"), name
        assert not service.get("volumes"), f"{name}: no bind mount of the checkout"
        assert "pip install" not in str(service.get("command", "")), name
        assert service.get("user") in (None, "10001:10001"), name  # the image's unprivileged user
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name


def test_the_dockerfile_is_multi_stage_non_root_and_installs_only_the_lock():
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2 and stages[0][1] == "build"
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "COPY --from=build /opt/venv /opt/venv" in final and "pip install" not in final
    installs = re.findall(r"pip install ([^\n\\&]*)", DOCKERFILE)
    assert installs[0].split() == [
        "--require-hashes",
        "--only-binary",
        ":all:",
        "--no-deps",
        "-r",
        "/tmp/requirements.lock",
    ]
    assert installs[1].split() == ["--no-deps", "--no-build-isolation", "--no-index", "."]
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # the context is only what the Dockerfile copies
    assert "!secrets/" not in ignored and "!.venv/" not in ignored


def _lock() -> dict[str, tuple[str, int]]:
    """``{canonical name: (pinned version, number of hashes)}`` of requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK):
        head = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", block)
        if head:
            pins[canonicalize_name(head.group(1))] = (head.group(2), block.count("--hash=sha256:"))
    return pins


def test_the_lock_pins_every_dependency_pyproject_declares():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _lock()
    assert pins and all(hashes > 0 for _, hashes in pins.values())  # --require-hashes needs every one
    wanted = [Requirement(text) for text in pyproject["project"]["dependencies"]]
    wanted += [Requirement(text) for text in pyproject["build-system"]["requires"]]  # --no-build-isolation
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: regenerate it (see the Dockerfile)"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, pyproject.toml wants {requirement}"
        )
        for extra in requirement.extras:  # e.g. psycopg[binary] -> psycopg-binary
            for text in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(text)
                if needed.marker is not None and needed.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(needed.name) in pins, f"{needed.name} ({requirement})"


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _skip_without(what: str, *args: str) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH")
    probe = _docker(*args)
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()
        pytest.skip(f"{what}: `docker {' '.join(args)}` failed: {reason[0] if reason else probe.returncode}")


def test_docker_compose_accepts_the_file(tmp_path):
    _skip_without("no docker compose plugin", "compose", "version")
    secrets = ROOT / "secrets"
    made = [] if secrets.exists() else [secrets]  # `config` checks that secret files exist
    try:
        if made:
            subprocess.run(
                ["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(secrets)], check=True, capture_output=True
            )
        done = _docker("compose", "--profile", "sim", "config", "--format", "json")
    finally:
        for path in made:
            shutil.rmtree(path)
    assert done.returncode == 0, done.stderr
    import json

    config = json.loads(done.stdout)
    ports = [
        (name, p.get("host_ip", ""), p["target"]) for name, s in config["services"].items() for p in s.get("ports", [])
    ]
    assert sorted(ports) == [
        ("executor", "", 9000),
        ("executor", "127.0.0.1", 9002),
        ("kafka", "127.0.0.1", 9092),
        ("risingwave", "127.0.0.1", 4566),
    ]


@pytest.mark.slow
def test_the_image_builds_and_runs_as_an_unprivileged_user():
    _skip_without("no Docker daemon answers", "info")
    tag = "ev-setpoint-pipeline:compose-test"
    built = _docker("build", "--tag", tag, ".", timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    try:
        uid = _docker("run", "--rm", "--entrypoint", "id", tag, "-u")
        assert uid.returncode == 0 and uid.stdout.strip() not in ("", "0"), uid
        version = _docker("run", "--rm", tag, "migrate", "set-password", "--help")
        assert version.returncode == 0, version.stderr
    finally:
        _docker("image", "rm", "--force", tag)
