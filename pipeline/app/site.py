"""Site configuration: the YAML an operator writes, turned into ``site.topology`` records.

A site is a grid connection with a main breaker (``limit_kw``); it may have sub-panels (``nodes``) and
holds chargers. Example::

    sites:
      - site_id: depot-1
        limit_kw: 100          # main breaker / contracted limit, kW
        limit_a: 160           # optional: current rating per phase, A
        nodes:                 # optional sub-panels; parent defaults to the site
          - {node_id: panel-a, limit_kw: 60, limit_a: 100}
        chargers:
          - {id: CP001, node: panel-a, max_power_kw: 22, phases: 3, voltage_v: 230, phase_rotation: SRT}
          - {id: CP002, max_power_kw: 11, password_hash: "$scrypt$ln=14,r=8,p=1$...$..."}
          - {id: CP003, max_power_kw: 22, plan: {departure: "06:30", energy_kwh: 40}}
        plan: {departure: "17:00", energy_kwh: 20}   # optional: what a session needs without a plan of its own
    ocpp:                      # optional: the executor's websocket server
      tls_cert: /etc/pipeline/cert.pem   # both set: wss:// (OCPP security profile 2)
      tls_key: /etc/pipeline/key.pem

``plan`` on a site or a charger is the default plan of its sessions (the charger's before the site's):
they leave at the next ``departure`` (``HH:MM``, UTC) after they start, needing ``energy_kwh``. The EV's own
figures and a plan on ``session.plans`` outrank it (docs/architecture.md, "Plans").

``password_hash`` (from ``pipeline charger-password``; format in :mod:`executor.ocpp.auth`) turns on HTTP
Basic auth: once any charger declares one, every charger must present its identity and password, and a
charger without a hash cannot connect. With none declared the executor runs in open mode.

Errors are :class:`ConfigError` with a one-line message naming the file and the offending entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.contracts.errors import ConfigError
from pipeline.contracts.topics import BOUNDS, PhaseRotation, TopologyNode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanDefaults(_Strict):
    """A default plan: sessions leave at the next ``departure`` (``HH:MM``, UTC) after they start and need
    ``energy_kwh`` by then; either may be left out (a session then needs the other from elsewhere)."""

    departure: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, UTC")
    energy_kwh: float | None = Field(None, ge=0, le=10_000)

    @property
    def departure_min(self) -> int | None:
        """``departure`` as minutes after midnight UTC (``site.topology``'s ``default_departure_min``)."""
        if self.departure is None:
            return None
        hours, minutes = self.departure.split(":")
        return int(hours) * 60 + int(minutes)


def _plan_fields(plan: PlanDefaults | None) -> dict[str, float | int | None]:
    if plan is None:
        return {}
    return {"default_departure_min": plan.departure_min, "default_energy_kwh": plan.energy_kwh}


class ChargerConfig(_Strict):
    id: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9._:-]+$")
    node: str | None = None
    max_power_kw: float = Field(gt=0)
    phases: int = Field(3, ge=1, le=3)
    phase_rotation: PhaseRotation | None = Field(
        None, description="the grid phases its L1, L2, L3 are wired to (OCPP 1.6 ConnectorPhaseRotation); None: RST"
    )
    voltage_v: float = Field(230.0, gt=0)
    connectors: int = Field(1, ge=1)
    managed: bool = True
    priority: int = Field(0, ge=-1000, le=1000, description="admission priority of its sessions (higher first)")
    weight: float = Field(1.0, gt=0, le=1000, description="fair-share weight of its sessions")
    flexible: bool = Field(False, description="price tiers may slow its sessions (tariff shaping)")
    plan: PlanDefaults | None = None
    password_hash: str | None = None

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, value: str | None) -> str | None:
        if value is not None:
            from executor.ocpp.auth import parse_password_hash  # the format belongs to the executor

            parse_password_hash(value)
        return value


class NodeConfig(_Strict):
    node_id: str = Field(min_length=1)
    parent_id: str | None = None
    limit_kw: float = Field(gt=0)
    limit_a: float | None = Field(None, gt=0, le=BOUNDS["current_a"], description="current rating per phase (A)")
    phases: int = Field(3, ge=1, le=3)
    voltage_v: float = Field(230.0, gt=0)


class SiteConfig(_Strict):
    site_id: str = Field(min_length=1)
    limit_kw: float = Field(gt=0)
    limit_a: float | None = Field(None, gt=0, le=BOUNDS["current_a"], description="current rating per phase (A)")
    phases: int = Field(3, ge=1, le=3)
    voltage_v: float = Field(230.0, gt=0)
    nodes: list[NodeConfig] = []
    chargers: list[ChargerConfig] = []
    plan: PlanDefaults | None = None

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        known = {self.site_id} | {n.node_id for n in self.nodes}
        for n in self.nodes:
            if n.parent_id is not None and n.parent_id not in known:
                raise ValueError(f"node {n.node_id}: unknown parent_id {n.parent_id!r}")
        for c in self.chargers:
            if c.node is not None and c.node not in known:
                raise ValueError(f"charger {c.id}: unknown node {c.node!r}")
        return self


class OcppConfig(_Strict):
    """The OCPP port's TLS: ``tls_cert``/``tls_key`` (PEM) turn on ``wss://`` (security profile 2 with
    charger passwords); ``tls_client_ca`` (PEM CA bundle) adds client certificates (security profile 3)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> OcppConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self


class ExecutorSecurity(TypedDict):
    """The site file's part of :class:`executor.ExecutorConfig`: ``credentials`` (``{charge_point_id:
    password hash}``, or ``None`` for open mode) and the TLS files (PEM paths, ``None`` when not set)."""

    credentials: dict[str, str] | None
    tls_certfile: str | None
    tls_keyfile: str | None
    tls_client_cafile: str | None


class PipelineConfig(_Strict):
    sites: list[SiteConfig] = Field(min_length=1)
    ocpp: OcppConfig = OcppConfig()

    def executor_security(self) -> ExecutorSecurity:
        """The executor's security fields (:class:`executor.ExecutorConfig`): ``credentials``
        (``{charger id: hash}``, or ``None`` for open mode when no charger declares a password) and the
        TLS files."""
        hashes = {c.id: c.password_hash for s in self.sites for c in s.chargers if c.password_hash}
        return ExecutorSecurity(
            credentials=hashes or None,
            tls_certfile=self.ocpp.tls_cert,
            tls_keyfile=self.ocpp.tls_key,
            tls_client_cafile=self.ocpp.tls_client_ca,
        )

    @model_validator(mode="after")
    def _unique(self) -> PipelineConfig:
        seen: set[str] = set()
        for site in self.sites:
            for ident in [site.site_id, *(n.node_id for n in site.nodes), *(c.id for c in site.chargers)]:
                if ident in seen:
                    raise ValueError(f"duplicate id {ident!r} (site, node and charger ids share one namespace)")
                seen.add(ident)
        return self

    def topology(self) -> list[TopologyNode]:
        """The ``site.topology`` records, parents before children."""
        out: list[TopologyNode] = []
        for site in self.sites:
            out.append(
                TopologyNode(
                    node_id=site.site_id,
                    site_id=site.site_id,
                    kind="site",
                    limit_kw=site.limit_kw,
                    limit_a=site.limit_a,
                    phases=site.phases,
                    voltage_v=site.voltage_v,
                    **_plan_fields(site.plan),
                )
            )
            for n in site.nodes:
                out.append(
                    TopologyNode(
                        node_id=n.node_id,
                        site_id=site.site_id,
                        parent_id=n.parent_id or site.site_id,
                        kind="panel",
                        limit_kw=n.limit_kw,
                        limit_a=n.limit_a,
                        phases=n.phases,
                        voltage_v=n.voltage_v,
                    )
                )
            for c in site.chargers:
                out.append(
                    TopologyNode(
                        node_id=c.id,
                        site_id=site.site_id,
                        parent_id=c.node or site.site_id,
                        kind="charger",
                        limit_kw=c.max_power_kw,
                        managed=c.managed,
                        phases=c.phases,
                        phase_rotation=c.phase_rotation,
                        voltage_v=c.voltage_v,
                        connectors=c.connectors,
                        priority=c.priority,
                        weight=c.weight,
                        flexible=c.flexible,
                        **_plan_fields(c.plan),
                    )
                )
        return out


def parse_config(data: object, source: str = "<config>") -> PipelineConfig:
    """Validate a decoded YAML document; raises :class:`ConfigError` with a one-line message."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{source}: {where + ': ' if where else ''}{err['msg']}") from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a site YAML file; raises :class:`ConfigError` (one line) on any problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} invalid YAML") from None
    return parse_config(data, str(path))
