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
(:func:`masked` shows them as ``***``). There is one section per component, and each is that component's
own configuration model, where its defaults are written once: ``kafka``
(:class:`pipeline.transport.config.KafkaSettings`), ``engine`` (:class:`pipeline.engine.config.EngineConfig`),
``executor`` (:class:`executor.config.ExecutorConfig`), ``gateway``, ``pgwire``
(:class:`pipeline.pgwire.config.PgwireSettings`) and ``log``. The packages never read settings themselves:
the application hands each its section (:func:`pipeline.app.loop.start_loop`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from executor.config import ExecutorConfig
from pipeline.app import SETTINGS_FILE_ENV
from pipeline.app.alerts import AlertSettings
from pipeline.contracts.errors import ConfigError
from pipeline.engine.config import EngineConfig
from pipeline.pgwire.config import PgwireSettings
from pipeline.transport.config import KafkaSettings

__all__ = [
    "EngineOverrides",
    "ExecutorOverrides",
    "GatewayOverrides",
    "GatewaySettings",
    "KafkaOverrides",
    "KafkaSettings",
    "LogSettings",
    "PgwireOverrides",
    "PgwireSettings",
    "SECRET_FILE_SUFFIX",
    "SETTINGS_FILE_ENV",
    "Settings",
    "load_settings",
    "masked",
    "read_secret_file",
    "sources",
]

SECRET_FILE_SUFFIX = "_FILE"


class GatewaySettings(BaseModel):
    """The signal gateway of ``pipeline run`` (``ws://host:port/topics/{topic}``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="signal gateway bind address")
    port: int = Field(9001, ge=0, le=65535, description="signal gateway port (0: a free one)")


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


class KafkaOverrides(TypedDict, total=False):
    """Command-line values over the ``kafka`` section (``None``: the flag was not given)."""

    bootstrap_servers: str | None
    topic_prefix: str | None


class EngineOverrides(TypedDict, total=False):
    """Command-line values over the ``engine`` section (``None``: the flag was not given)."""

    tick_s: float | None


class ExecutorOverrides(TypedDict, total=False):
    """Command-line values over the ``executor`` section (``None``: the flag was not given)."""

    host: str | None
    port: int | None
    group: str | None


class GatewayOverrides(TypedDict, total=False):
    """Command-line values over the ``gateway`` section (``None``: the flag was not given)."""

    host: str | None
    port: int | None


class PgwireOverrides(TypedDict, total=False):
    """Command-line values over the ``pgwire`` section (``None``: the flag was not given)."""

    enabled: bool | None
    host: str | None
    port: int | None


class Settings(BaseSettings):
    """All deployment settings; one nested section per component."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        extra="ignore",
        nested_model_default_partial_update=True,
        env_parse_none_str="null",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    pgwire: PgwireSettings = Field(default_factory=PgwireSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
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


def load_settings(
    path: str | Path | None = None,
    *,
    kafka: KafkaOverrides | None = None,
    engine: EngineOverrides | None = None,
    executor: ExecutorOverrides | None = None,
    gateway: GatewayOverrides | None = None,
    pgwire: PgwireOverrides | None = None,
) -> Settings:
    """Load :class:`Settings` from the command-line values, the environment and the YAML file ``path``.

    ``path`` defaults to ``$PIPELINE_SETTINGS_FILE``; with neither, only the environment and defaults count.
    ``kafka`` ... ``pgwire`` are the values command-line flags set in that section, e.g.
    ``kafka={"topic_prefix": "t1."}``; ``None`` values (flags not given) are left out. Raises
    :class:`ConfigError` with a one-line message (never a secret) if the file is missing or invalid or an
    environment variable holds a bad value (the message names the variable).
    """
    sections = {"kafka": kafka, "engine": engine, "executor": executor, "gateway": gateway, "pgwire": pgwire}
    overrides: dict[str, Any] = {}  # section name -> {field: value}
    for name, section in sections.items():
        values = {key: value for key, value in (section or {}).items() if value is not None}
        if values:
            overrides[name] = values
    cls, path = _settings_class(path)
    try:
        return cls(**overrides)  # pydantic-settings takes the strongest source as keyword arguments
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        loc = err["loc"]
        given = len(loc) >= 2 and loc[1] in overrides.get(str(loc[0]), {})
        env = _env_name(loc) if len(loc) >= 2 and not given else None
        if env is not None:
            raise ConfigError(f"{env}: {message}") from None
        source = f"{path}: " if path else ""
        raise ConfigError(f"{source}settings {where + ': ' if where else ''}{message}") from None
    except SettingsError as exc:  # PIPELINE_<SECTION> set to something other than a JSON object
        field = re.search(r'field "([^"]+)"', str(exc))
        name = f"PIPELINE_{field.group(1).upper()}" if field else "environment"
        raise ConfigError(f"{name}: a section must be a JSON object; set one value with {name}__<NAME>") from None
    except Exception as exc:
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

    return {
        name: {key: plain(getattr(section, key)) for key in type(section).model_fields}
        for name, section in ((n, getattr(settings, n)) for n in Settings.model_fields)
    }


def sources(path: str | Path | None = None) -> dict[str, str]:
    """Where each setting comes from, ``{"section.field": "env" | "file" | "default"}`` (no CLI flags:
    those apply to one command). ``path`` as for :func:`load_settings`; raises :class:`ConfigError`."""
    cls, path = _settings_class(path)
    from_env = _EnvSettings(cls)()
    from_file = YamlConfigSettingsSource(cls)() if path is not None else {}
    out: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        env, file = from_env.get(name), from_file.get(name)
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):  # every section is a model
            continue
        for key in section.model_fields:
            out[f"{name}.{key}"] = (
                "env"
                if isinstance(env, dict) and key in env
                else "file"
                if isinstance(file, dict) and key in file
                else "default"
            )
    return out
