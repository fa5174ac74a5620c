"""Apply-time Kafka settings: ``sql/`` names topics but never a broker.

At apply time on RisingWave, each table, source and sink with ``connector = 'kafka'`` gets the broker
address (``properties.bootstrap.server``), the topic prefix (topic = prefix + topic) and any security
properties injected into its ``WITH`` clause, through sqlglot's AST. Secrets are redacted from
everything printed or recorded.

The values come from the deployment settings (:mod:`pipeline.app.settings`: ``PIPELINE_KAFKA__*``
variables, the settings file, CLI overrides). File paths (CA, certificate, key) are handed to RisingWave
as they are: they must be paths on RisingWave's nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlglot
from pydantic import SecretStr
from sqlglot import exp
from sqlglot.tokens import TokenType

from pipeline.sqlmodel.objects import DIALECT, SqlObject
from pipeline.transport.config import KafkaSettings

REDACTED = "***"
BOOTSTRAP = "properties.bootstrap.server"
SECRET_KEYS = frozenset({"properties.sasl.password", "properties.ssl.key.password"})


@dataclass(frozen=True)
class ConnectorSettings:
    """Where the Kafka connectors point: ``bootstrap_servers`` (``host:port[,host:port]``, ``None`` to
    leave the WITH clause without one), ``topic_prefix`` (prepended to every topic) and ``properties``
    (further RisingWave Kafka connector properties, e.g. ``properties.security.protocol``)."""

    bootstrap_servers: str | None = None
    topic_prefix: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_kafka(cls, kafka: KafkaSettings) -> ConnectorSettings:
        """From the deployment's :class:`pipeline.transport.config.KafkaSettings` (librdkafka property
        names, as RisingWave takes them)."""

        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        props: dict[str, str | None] = {}
        protocol = kafka.security_protocol
        if protocol != "PLAINTEXT":
            props["properties.security.protocol"] = protocol
        if protocol.startswith("SASL_"):
            props["properties.sasl.mechanism"] = kafka.sasl_mechanism
            props["properties.sasl.username"] = kafka.sasl_username
            props["properties.sasl.password"] = secret(kafka.sasl_password)
        if protocol in ("SSL", "SASL_SSL"):
            props["properties.ssl.ca.location"] = str(kafka.ssl_cafile) if kafka.ssl_cafile else None
            props["properties.ssl.certificate.location"] = str(kafka.ssl_certfile) if kafka.ssl_certfile else None
            props["properties.ssl.key.location"] = str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
            props["properties.ssl.key.password"] = secret(kafka.ssl_key_password)
            if not kafka.ssl_check_hostname:
                props["properties.ssl.endpoint.identification.algorithm"] = "none"
        return cls(kafka.bootstrap_servers, kafka.topic_prefix, {k: v for k, v in props.items() if v})


def is_kafka(obj: SqlObject) -> bool:
    """Whether ``obj`` is a table, source or sink on the Kafka connector."""
    return obj.kind in ("table", "source", "sink") and obj.properties.get("connector", "").lower() == "kafka"


def _key(prop: exp.Property) -> str:
    return prop.this.sql(DIALECT).lower() if isinstance(prop.this, exp.Expression) else str(prop.this).lower()


def _shown(key: str, value: str, redact: bool) -> str:
    return REDACTED if redact and key in SECRET_KEYS else value


def inject(obj: SqlObject, settings: ConnectorSettings, *, redact: bool = False) -> exp.Create:
    """A copy of ``obj``'s statement with the Kafka settings in its ``WITH`` clause.

    Properties already in the file keep their place and get the settings' value; new ones are appended
    after them (before ``FORMAT ... ENCODE ...``). With ``redact``, secret values read ``'***'``.
    Objects not on the Kafka connector come back unchanged.
    """
    create = obj.ast.copy()
    if not is_kafka(obj):
        return create
    props = create.args["properties"]
    wanted: dict[str, str] = {}
    if obj.topic is not None:
        wanted["topic"] = settings.topic_prefix + obj.topic
    if settings.bootstrap_servers:
        wanted[BOOTSTRAP] = settings.bootstrap_servers
    wanted.update(settings.properties)
    for prop in props.expressions:
        if type(prop) is exp.Property and _key(prop) in wanted:
            key = _key(prop)
            prop.set("value", exp.Literal.string(_shown(key, wanted.pop(key), redact)))
    extra = [exp.Property(this=exp.var(k), value=exp.Literal.string(_shown(k, v, redact))) for k, v in wanted.items()]
    plain = [p for p in props.expressions if type(p) is exp.Property]
    rest = [p for p in props.expressions if type(p) is not exp.Property]
    props.set("expressions", plain + extra + rest)
    return create


def _sink_source(obj: SqlObject) -> str | None:
    """The relation a sink was written ``FROM`` (``CREATE SINK s FROM mv``), or ``None`` when it was
    written ``AS SELECT ...``. sqlglot keeps both as a query; the tokens tell them apart."""
    if obj.kind != "sink":
        return None
    query = obj.ast.expression
    tables = list(query.find_all(exp.Table)) if isinstance(query, exp.Select) else []
    if len(tables) != 1 or query.sql(DIALECT) != f"SELECT * FROM {tables[0].sql(DIALECT)}":
        return None
    seen_sink = False
    for token in sqlglot.tokenize(obj.sql, read=DIALECT):
        seen_sink = seen_sink or token.token_type == TokenType.SINK
        if seen_sink and token.token_type in (TokenType.FROM, TokenType.ALIAS):
            return tables[0].sql(DIALECT) if token.token_type == TokenType.FROM else None
    return None


def render(obj: SqlObject, create: exp.Create) -> str:
    """``create`` (``obj``'s statement, e.g. after :func:`inject`) as pretty RisingWave SQL, keeping a
    sink's ``FROM relation`` form when the file used it."""
    source = _sink_source(obj)
    if source is None:
        return create.sql(DIALECT, pretty=True, comments=False)
    bare = create.copy()
    bare.set("expression", None)
    text = bare.sql(DIALECT, pretty=True, comments=False)
    head = bare.sql(DIALECT, comments=False).split(" WITH (", 1)[0]
    if not text.startswith(head + "\n"):
        return create.sql(DIALECT, pretty=True, comments=False)
    return f"{head} FROM {source}{text[len(head) :]}"


def redact_text(text: str, settings: ConnectorSettings) -> str:
    """``text`` with every secret value of ``settings`` replaced by ``***`` (e.g. a database error)."""
    for key in SECRET_KEYS:
        secret = settings.properties.get(key)
        if secret:
            text = text.replace(secret, REDACTED)
    return text
