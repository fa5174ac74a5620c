"""Deployment settings: where the services find their infrastructure, from env vars and a settings file.

The site YAML (``--config``) describes the *site* (breakers, chargers); this module describes the
*deployment* (brokers, credentials), which differs between a laptop, CI and production while the site
stays the same. Sources, strongest first:

1. keyword arguments (what a CLI flag such as ``--bootstrap-servers`` sets);
2. environment variables with the prefix ``PIPELINE_`` and ``__`` between nested names, e.g.
   ``PIPELINE_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``PIPELINE_KAFKA__SASL_PASSWORD=...``;
3. a YAML settings file (``--settings FILE`` or ``PIPELINE_SETTINGS_FILE``), one section per component::

       kafka:
         bootstrap_servers: broker-1:9092,broker-2:9092
         topic_prefix: "depot-1."
         security_protocol: SASL_SSL
         sasl_mechanism: SCRAM-SHA-512
         sasl_username: pipeline

4. the defaults below.

Secrets are :class:`pydantic.SecretStr`: they never appear in ``repr``, logs or error messages. Other
components add their own section as another field of :class:`Settings` (``executor: ExecutorSettings``
and so on) with no change to how settings are loaded.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from pipeline.site_config import ConfigError

__all__ = ["KafkaSettings", "Settings", "SETTINGS_FILE_ENV", "load_settings"]

SETTINGS_FILE_ENV = "PIPELINE_SETTINGS_FILE"


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


class Settings(BaseSettings):
    """All deployment settings; one nested section per component (today: ``kafka``)."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_", env_nested_delimiter="__", extra="ignore", nested_model_default_partial_update=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls), file_secret_settings


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load :class:`Settings` from ``overrides``, the environment and the YAML file ``path``.

    ``path`` defaults to ``$PIPELINE_SETTINGS_FILE``; with neither, only the environment and defaults count.
    ``overrides`` are nested dicts by section, e.g. ``kafka={"topic_prefix": "t1."}``. Raises
    :class:`ConfigError` with a one-line message (never a secret) if the file is missing or invalid.
    """
    path = path or os.environ.get(SETTINGS_FILE_ENV) or None
    cls: type[Settings] = Settings
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: settings file not found")
        cls = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": path}})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        source = f"{path}: " if path else ""
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}settings {where + ': ' if where else ''}{message}") from None
    except Exception as exc:  # noqa: BLE001 - YAML errors from the file source
        if path is not None and "yaml" in type(exc).__module__:
            raise ConfigError(f"{path}: invalid YAML") from None
        raise
