"""Deployment settings: where the services find their infrastructure, from env vars and a settings file.

The site YAML (``--config``) describes the *site* (breakers, chargers); this module describes the
*deployment* (brokers, credentials), which differs between a laptop, CI and production while the site
stays the same. Sources, strongest first:

1. keyword arguments (what a CLI flag such as ``--bootstrap-servers`` sets);
2. environment variables with the prefix ``PIPELINE_`` and ``__`` between nested names, e.g.
   ``PIPELINE_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``PIPELINE_KAFKA__SASL_PASSWORD=...``; each secret
   can instead be read from a file named by the same variable with ``_FILE`` appended, e.g.
   ``PIPELINE_KAFKA__SASL_PASSWORD_FILE=/run/secrets/kafka_password`` (how Docker and compose hand over
   secrets: the value never sits in the environment or in the compose file);
3. a YAML settings file (``--settings FILE`` or ``PIPELINE_SETTINGS_FILE``), one section per component::

       kafka:
         bootstrap_servers: broker-1:9092,broker-2:9092
         topic_prefix: "depot-1."
         security_protocol: SASL_SSL
         sasl_mechanism: SCRAM-SHA-512
         sasl_username: pipeline

4. the defaults below.

Secrets are :class:`pydantic.SecretStr`: they never appear in ``repr``, logs or error messages
(:func:`masked` shows them as ``***``). There is one section per component: ``kafka``, ``engine``,
``executor``, ``gateway``, ``pgwire`` and ``log``; a component adds its own as another field of
:class:`Settings` with no change to how settings are loaded. The ``executor`` and ``engine`` packages
never read settings themselves: the CLI maps a section onto their constructor arguments
(:meth:`ExecutorSettings.executor_options`, :meth:`EngineSettings.service_options`), so their defaults
here equal those constructors' defaults (a test holds them together).
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from pipeline.site_config import ConfigError

__all__ = ["EngineSettings", "ExecutorSettings", "GatewaySettings", "KafkaSettings", "LogSettings", "PgwireSettings",
           "SECRET_FILE_SUFFIX", "Settings", "SETTINGS_FILE_ENV", "load_settings", "masked", "read_secret_file",
           "sources"]

SETTINGS_FILE_ENV = "PIPELINE_SETTINGS_FILE"
SECRET_FILE_SUFFIX = "_FILE"


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster and how to lay out the topics on it.

    ``topic_prefix`` is prepended to every topic name and consumer group id on the broker, so several
    deployments can share one cluster; code keeps using the logical names of :mod:`pipeline.topics`.
    ``partitions`` and ``replication_factor`` apply to topics this deployment creates (existing topics
    are left as they are). Times are in seconds.
    """

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="host:port[,host:port...]")
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    client_id: str = "ev-setpoint-pipeline"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM), for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="client private key (PEM), for mutual TLS")
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    create_topics: bool = Field(True, description="create missing topics at start (needs CreateTopics ACL)")
    partitions: int = Field(1, ge=1, description="partitions of each topic created")
    replication_factor: int = Field(1, ge=1, description="replicas of each topic created")
    min_insync_replicas: int | None = Field(None, ge=1, description="min.insync.replicas of topics created")
    request_timeout_s: float = Field(30.0, gt=0)
    session_timeout_s: float = Field(10.0, gt=0, description="consumer group session timeout")
    join_timeout_s: float = Field(60.0, gt=0, description="wait this long for a consumer group assignment")
    retry_s: float = Field(120.0, ge=0, description="keep retrying start, sends and topic creation this long "
                                                   "while the brokers are unreachable (restarts, failover)")

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, "
                             f"not {self.security_protocol}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("set both ssl_certfile and ssl_keyfile, or neither")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``SSL``/``SASL_SSL`` (``None`` otherwise).

        Raises :class:`ConfigError` if a certificate or key file cannot be read.
        """
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
            if self.ssl_certfile is not None:
                password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
                context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile), password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"kafka TLS: {exc}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self) -> dict[str, Any]:
        """Connection keyword arguments shared by aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return options


class EngineSettings(BaseModel):
    """The embedded engine (``pipeline run`` and ``pipeline engine``): times in clock seconds.

    ``tick_s`` is the re-evaluation period with no input (``NOW()`` filters fire on it), ``poll_s`` how
    long one poll for input waits, ``batch_max`` the most input records per micro-batch,
    ``catch_up_timeout_s`` the bound on the start-up read of the inputs, and ``sql_dir`` the RisingWave SQL
    to run (``None``: the ``sql/`` shipped with the pipeline).
    """

    model_config = ConfigDict(extra="forbid")

    tick_s: float = Field(1.0, gt=0, description="re-evaluation period, s")
    poll_s: float = Field(0.05, gt=0, description="wait for input this long per poll, s")
    batch_max: int = Field(5000, ge=1, description="most input records per micro-batch")
    catch_up_timeout_s: float = Field(300.0, gt=0, description="start-up read of the inputs, s")
    sql_dir: Path | None = Field(None, description="sql/ to run (default: the one shipped with the pipeline)")

    def service_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`pipeline.engine.service.EngineService` (``sql_dir`` goes to the
        engine itself)."""
        return {"tick_s": self.tick_s, "poll_s": self.poll_s, "batch_max": self.batch_max,
                "catch_up_timeout_s": self.catch_up_timeout_s}


class ExecutorSettings(BaseModel):
    """The OCPP central system (``pipeline run`` and ``pipeline executor``); see :class:`executor.Executor`.

    ``host``/``port`` are where chargers connect (``ws://host:port/ocpp/{id}``), ``group`` the consumer
    group of the setpoint and topology topics. ``http_host``/``http_port`` are the separate plain-HTTP
    listener for ``GET /status`` (the connected chargers), ``GET /metrics`` and ``GET /healthz``, loopback
    by default because the charger list is not for the chargers' network; ``metrics: false`` turns it off.
    The rest is dispatch policy (:class:`executor.dispatch.Policy`):
    clock seconds for ``ev_response_lag_s``, ``increase_debounce_s`` and ``setpoint_ttl_s`` (``null``
    turns the TTL off); real seconds for ``call_timeout_s``, the retry back-off (``retry_initial_s`` x 2^n,
    at most ``retry_max_s``) and ``boot_wait_s``; amperes for ``deadband_a``; ``failsafe_fraction`` of the
    safe share in the fail-safe station maximum.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="OCPP websocket bind address")
    port: int = Field(9000, ge=0, le=65535, description="OCPP websocket port (0: a free one)")
    group: str = Field("executor", min_length=1, description="consumer group (prefixed by kafka.topic_prefix)")
    call_timeout_s: float = Field(10.0, gt=0, description="wait this long for a charger's answer, s")
    heartbeat_interval_s: int = Field(300, ge=1, description="BootNotification interval, s")
    charging_rate_unit: Literal["A", "W"] = Field("A", description="preferred charging rate unit")
    deadband_a: float = Field(0.1, ge=0, description="skip increases smaller than this, A")
    ev_response_lag_s: float = Field(10.0, ge=0, description="a cut is trusted this long after its ack, s")
    increase_debounce_s: float = Field(1.0, ge=0, description="an increase waits this long unchanged, s")
    setpoint_ttl_s: float | None = Field(1800.0, gt=0, description="older setpoints fall back to the safe share")
    failsafe_fraction: float = Field(1.0, gt=0, le=1, description="fraction of the safe share in the station max")
    retry_initial_s: float = Field(1.0, gt=0, description="first retry after a failed call, s")
    retry_max_s: float = Field(60.0, gt=0, description="longest retry back-off, s")
    boot_wait_s: float = Field(2.0, ge=0, description="wait for a charger's first message, s")
    metrics: bool = Field(True, description="serve GET /metrics and GET /status on http_host:http_port")
    http_host: str = Field("127.0.0.1", min_length=1, description="status and metrics bind address")
    http_port: int = Field(9002, ge=0, le=65535, description="status and metrics port (0: a free one)")

    @model_validator(mode="after")
    def _retries(self) -> ExecutorSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        return self

    def executor_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`executor.Executor` besides ``host``, ``port`` and ``group``."""
        options = self.model_dump(exclude={"host", "port", "group", "metrics"})
        if not self.metrics:
            options["http_port"] = None
        return options


class GatewaySettings(BaseModel):
    """The signal gateway of ``pipeline run`` (``ws://host:port/topics/{topic}``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="signal gateway bind address")
    port: int = Field(9001, ge=0, le=65535, description="signal gateway port (0: a free one)")


class PgwireSettings(BaseModel):
    """The Postgres-wire server on the embedded engine's views (psql clients, like RisingWave's 4566)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1, description="bind address")
    port: int = Field(4566, ge=0, le=65535, description="port (0: a free one)")
    password: SecretStr | None = Field(None, description="clients must give it (none: no password asked)")


LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class LogSettings(BaseModel):
    """Logging of every command: ``level`` (``None``: the command's own default, ``info``, or
    ``warning`` for ``replay``) and ``format``, ``text`` for people or ``json`` (one object a line)."""

    model_config = ConfigDict(extra="forbid")

    level: LogLevel | None = None
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class Settings(BaseSettings):
    """All deployment settings; one nested section per component."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_", env_nested_delimiter="__", extra="ignore", nested_model_default_partial_update=True,
        env_parse_none_str="null",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    pgwire: PgwireSettings = Field(default_factory=PgwireSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvSettings(settings_cls), YamlConfigSettingsSource(settings_cls), file_secret_settings


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def read_secret_file(variable: str, path: str | Path) -> str:
    """The secret in the file ``path`` named by ``variable`` (an env variable or an option), without its
    trailing line break.

    Raises :class:`ConfigError` naming the variable and the file (never the content) if the file cannot be
    read or holds nothing.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{variable}: cannot read {path}: {reason}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{variable}: {path} is empty")
    return value


class _EnvSettings(EnvSettingsSource):
    """``PIPELINE_*`` variables, where ``PIPELINE_<SECTION>__<SECRET>_FILE`` reads the secret ``<SECRET>``
    of ``<SECTION>`` from the file it names (the convention of Docker secrets, mounted under /run/secrets).

    Only fields typed :class:`SecretStr` take a ``_FILE`` variable; for any other field the variable stays
    an unknown setting (and fails as one). Setting both the value and its ``_FILE`` variable is an error.
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for section, field in self.settings_cls.model_fields.items():
            values = data.get(section)
            if not isinstance(values, dict):
                continue
            for key, sub in field.annotation.model_fields.items():  # type: ignore[union-attr]
                file_key = key + SECRET_FILE_SUFFIX.lower()
                if not _is_secret(sub.annotation) or file_key not in values:
                    continue
                variable = f"PIPELINE_{section}__{key}".upper()
                if key in values:
                    raise ConfigError(f"set {variable} or {variable}{SECRET_FILE_SUFFIX}, not both")
                values[key] = read_secret_file(variable + SECRET_FILE_SUFFIX, values.pop(file_key))
        return data


def _settings_class(path: str | Path | None) -> tuple[type[Settings], Path | None]:
    """:class:`Settings` reading the YAML file ``path`` (default ``$PIPELINE_SETTINGS_FILE``), and that path."""
    path = path or os.environ.get(SETTINGS_FILE_ENV) or None
    if path is None:
        return Settings, None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: settings file not found")
    return type("Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": path}}), path


def _env_name(loc: tuple[Any, ...]) -> str | None:
    """The environment variable that set the value at ``loc`` (e.g. ``PIPELINE_EXECUTOR__PORT``), if one did."""
    name = "PIPELINE_" + "__".join(str(part) for part in loc[:2]).upper()
    return name if any(key.upper() == name for key in os.environ) else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load :class:`Settings` from ``overrides``, the environment and the YAML file ``path``.

    ``path`` defaults to ``$PIPELINE_SETTINGS_FILE``; with neither, only the environment and defaults count.
    ``overrides`` are nested dicts by section, e.g. ``kafka={"topic_prefix": "t1."}``. Raises
    :class:`ConfigError` with a one-line message (never a secret) if the file is missing or invalid or an
    environment variable holds a bad value (the message names the variable).
    """
    cls, path = _settings_class(path)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        loc = err["loc"]
        given = len(loc) >= 2 and isinstance(overrides.get(loc[0]), dict) and loc[1] in overrides[loc[0]]
        env = _env_name(loc) if len(loc) >= 2 and not given else None
        if env is not None:
            raise ConfigError(f"{env}: {message}") from None
        source = f"{path}: " if path else ""
        raise ConfigError(f"{source}settings {where + ': ' if where else ''}{message}") from None
    except SettingsError as exc:  # PIPELINE_<SECTION> set to something other than a JSON object
        field = re.search(r'field "([^"]+)"', str(exc))
        name = f"PIPELINE_{field.group(1).upper()}" if field else "environment"
        raise ConfigError(f"{name}: a section must be a JSON object; set one value with {name}__<NAME>") from None
    except Exception as exc:  # noqa: BLE001 - YAML errors from the file source
        if path is not None and "yaml" in type(exc).__module__:
            raise ConfigError(f"{path}: invalid YAML") from None
        raise


def masked(settings: Settings) -> dict[str, dict[str, Any]]:
    """The settings as plain data by section (paths as strings), every secret that is set as ``***``."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "***"
        if isinstance(value, Path):
            return str(value)
        return value

    return {name: {key: plain(getattr(section, key)) for key in type(section).model_fields}
            for name, section in ((n, getattr(settings, n)) for n in Settings.model_fields)}


def sources(path: str | Path | None = None) -> dict[str, str]:
    """Where each setting comes from, ``{"section.field": "env" | "file" | "default"}`` (no CLI flags:
    those apply to one command). ``path`` as for :func:`load_settings`; raises :class:`ConfigError`."""
    cls, path = _settings_class(path)
    from_env = _EnvSettings(cls)()
    from_file = YamlConfigSettingsSource(cls)() if path is not None else {}
    out: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        env, file = from_env.get(name), from_file.get(name)
        for key in field.annotation.model_fields:  # type: ignore[union-attr]
            out[f"{name}.{key}"] = ("env" if isinstance(env, dict) and key in env
                                    else "file" if isinstance(file, dict) and key in file else "default")
    return out
