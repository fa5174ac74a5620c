"""The Kafka transport's one configuration model: the cluster, its security and the topic layout.

The application's deployment settings use :class:`KafkaSettings` as their ``kafka`` section
(``PIPELINE_KAFKA__BOOTSTRAP_SERVERS=broker:9092``, a settings file, or ``*_FILE`` secrets);
:class:`pipeline.transport.kafka.KafkaTransport` takes it as its only argument.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from pipeline.contracts.errors import ConfigError

__all__ = ["KafkaSettings"]


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster and how to lay out the topics on it.

    ``topic_prefix`` is prepended to every topic name and consumer group id on the broker, so several
    deployments can share one cluster; code keeps using the logical names of :mod:`pipeline.contracts.topics`.
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
    retry_s: float = Field(
        120.0,
        ge=0,
        description="keep retrying start, sends and topic creation this long "
        "while the brokers are unreachable (restarts, failover)",
    )

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(
                f"sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL, not {self.security_protocol}"
            )
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
