"""What ``pipeline status`` shows, gathered from a running pipeline as plain data.

Status is a client, never part of the loop. Its sources are the two a running pipeline already offers:

* the views over Postgres wire (a DSN): the embedded engine's read-only port (:mod:`pipeline.pgwire.server`) or
  RisingWave in production, the same views either way, read with plain SQL both accept, inside one
  ``BEGIN READ ONLY`` so every figure comes from the same state;
* the executor's ``GET /status`` on its status and metrics port (plain HTTP, ``executor.http_port``, 9002 on
  loopback by default; never the OCPP port), for the chargers connected now, which only the executor
  knows. A missing executor is reported in the snapshot, not raised.

:func:`snapshot` returns one JSON-able dict; :mod:`pipeline.status.view` renders it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from pipeline.contracts.errors import PipelineError
from pipeline.migrate.targets.pg_errors import describe
from pipeline.status import DEFAULT_DSN, DEFAULT_EXECUTOR_URL

__all__ = ["DEFAULT_DSN", "DEFAULT_EXECUTOR_URL", "StatusError", "fetch_chargers", "fetch_views", "snapshot"]


_QUERIES = {
    "nodes": "SELECT node_id, site_id, kind, depth, breaker_limit_kw, limit_kw, building_kw, fixed_kw, headroom_kw, "
    "limited_by FROM node_headroom",
    "ancestors": "SELECT node_id, ancestor_id FROM node_ancestors",
    "setpoints": "SELECT session_id, charge_point_id, connector_id, site_id, node_id, setpoint_kw, setpoint_a, "
    "binding, price_tier, computed_at FROM session_setpoints",
    "sessions": "SELECT session_id, charge_point_id, connector_id, site_id, node_id, started_at, current_power_kw, "
    "energy_kwh, soc_pct, sampled_at FROM ocpp_active_sessions",
    "dr": "SELECT site_id, dr_event_id, curtailment_pct, limit_kw, event_start, event_end AS ends_at FROM dr_events",
    "alerts": "SELECT alert_id, kind, severity, site_id, subject_id, value_kw, limit_kw, since, message FROM alerts",
    "prices": "SELECT site_id, tariff_id, price_per_kwh, currency, price_tier, valid_from, valid_to FROM current_price_tier",
    "plans": "SELECT t.session_id, t.departure_at, t.energy_needed_kwh, t.delivered_kwh, t.remaining_kwh, "
    "t.departure_from, t.need_from, l.laxity_s FROM session_plan_targets AS t "
    "LEFT JOIN session_limits AS l ON l.session_id = t.session_id",
}
"""Plain SQL over the views and the sessions table, as both RisingWave and the embedded engine take it."""


class StatusError(PipelineError):
    """The views cannot be read (unreachable DSN, refused login, views missing), with the server's answer
    when it gave one; never a secret."""


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for messages and the snapshot)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<dsn>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _iso(value: Any) -> Any:
    """A value as JSON takes it: timestamps as ISO-8601 UTC (naive ones, as the embedded engine sends
    them, are UTC), numerics (``Decimal``) as floats."""
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(cur: psycopg.Cursor, sql: str) -> list[dict[str, Any]]:
    cur.execute(sql)
    names = [d.name for d in cur.description or []]
    return [{k: _iso(v) for k, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def fetch_views(
    dsn: str = DEFAULT_DSN, *, password: str | None = None, timeout_s: float = 5.0
) -> dict[str, list[dict]]:
    """Read the views status needs, in one read-only transaction: ``{"nodes", "ancestors", "setpoints",
    "sessions", "dr", "alerts", "prices", "plans"}``, each a list of row dicts (see :func:`fetch_rows`)."""
    return fetch_rows(dsn, _QUERIES, password=password, timeout_s=timeout_s)


def fetch_rows(
    dsn: str, queries: dict[str, str], *, password: str | None = None, timeout_s: float = 5.0
) -> dict[str, list[dict]]:
    """Run ``queries`` (``{name: SQL}``) in one read-only transaction; ``{name: rows}``, each row a dict
    (timestamps as ISO-8601 UTC strings, kW as floats). ``password`` is used when the DSN carries none.

    Raises :class:`StatusError` (the password redacted) when the DSN cannot be reached (one line) or a
    query fails (the server's message, detail and hint: :func:`pipeline.migrate.targets.pg_errors.describe`).
    """
    where = redact(dsn)
    try:
        with psycopg.connect(
            dsn,
            connect_timeout=max(1, round(timeout_s)),
            application_name="pipeline status",
            password=password if password and not _has_password(dsn) else None,  # None: left out
        ) as conn:
            conn.read_only = True  # BEGIN READ ONLY: one snapshot on both the embedded engine and RisingWave
            with conn.cursor() as cur:
                out = {name: _rows(cur, sql) for name, sql in queries.items()}
            conn.rollback()
            return out
    except psycopg.Error as exc:
        if exc.diag.message_primary:  # the server answered: its message, cause, detail and hint
            raise StatusError(f"{where}: {describe(exc)}") from None
        raise StatusError(f"cannot read the views at {where}: {_first_line(exc)}") from None


def _has_password(dsn: str) -> bool:
    try:
        return urlsplit(dsn).password is not None or "password=" in dsn
    except ValueError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # libpq: 'connection failed: connection to server at "...", port N failed: Connection refused'
    return lines[0].rsplit("failed:", 1)[-1].strip() or lines[0]


def fetch_chargers(executor_url: str = DEFAULT_EXECUTOR_URL, timeout_s: float = 3.0) -> dict[str, Any]:
    """The executor's ``GET /status``: ``{"url", "reachable", "error", "chargers": [...]}``. Never raises:
    an unreachable executor or a bad answer gives ``reachable: False`` with the reason in ``error``."""
    url = executor_url.rstrip("/") + "/status"
    out: dict[str, Any] = {"url": executor_url, "reachable": False, "error": None, "chargers": []}
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        out["error"] = f"HTTP {exc.code} from {url}"
        return out
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        out["error"] = f"{url}: {reason}"
        return out
    if not isinstance(body, dict) or not isinstance(body.get("chargers"), list):
        out["error"] = f"{url}: not an executor status"
        return out
    out.update(reachable=True, chargers=body["chargers"], at=body.get("at"))
    return out


def _sum(values: list[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return round(sum(numbers), 3) if numbers else None


def plan_state(plan: dict) -> str:
    """Whether a session's plan is met: ``met`` (nothing remains), ``at risk`` (it can no longer be met:
    negative laxity, the ``plan_at_risk`` alert), ``on track``, or ``unknown`` (not balanced now: a stale
    meter, an unmanaged charger, so no laxity)."""
    if (plan.get("remaining_kwh") or 0) <= 0:
        return "met"
    laxity = plan.get("laxity_s")
    if laxity is None:
        return "unknown"
    return "at risk" if laxity < 0 else "on track"


def build(views: dict[str, list[dict]], chargers: dict[str, Any] | None = None, dsn: str = DEFAULT_DSN) -> dict:
    """Shape the rows of :func:`fetch_views` (and :func:`fetch_chargers`) into the status snapshot.

    ``{"at", "dsn", "sites": [...], "sessions": [...], "alerts": [...], "executor": {...} | None}``:

    * each site: its ``node_headroom`` row (``limit_kw`` in force, ``breaker_limit_kw``, ``building_kw``,
      ``fixed_kw``, ``headroom_kw``, ``limited_by``), ``setpoint_kw`` and ``measured_kw`` summed over its
      sessions, ``sessions`` (count), ``dr_events`` (every DR event in force, each with its own id, limit
      and end, earliest end first), ``dr`` (the first of them, or ``None``), ``price`` (the tariff in force
      or ``None``) and ``nodes``: every breaker below the site (not chargers), the same figures, by depth;
    * each session: ``setpoint_kw``/``setpoint_a`` and ``binding`` (``None`` for a session the views do not
      balance), ``measured_kw`` (the last meter reading), ``soc_pct``, ``energy_kwh``, ``price_tier``,
      times as ISO-8601 UTC, and ``plan`` (``None`` without one): ``departure_at``, ``energy_needed_kwh``,
      ``delivered_kwh``, ``remaining_kwh``, ``laxity_s``, ``departure_from`` and ``need_from`` (``ev``, a
      plan's source, or ``site``) and ``state`` (:func:`plan_state`);
    * each alert open now (the ``alerts`` view: ``kind``, ``severity``, ``site_id``, ``subject_id``,
      ``value_kw``, ``limit_kw``, ``since``, ``message``), critical first.
    """
    setpoints = {row["session_id"]: row for row in views.get("setpoints", [])}
    plans = {
        row["session_id"]: {k: v for k, v in row.items() if k != "session_id"} | {"state": plan_state(row)}
        for row in views.get("plans", [])
    }
    sessions = []
    for row in views.get("sessions", []):
        sp = setpoints.get(row["session_id"], {})
        sessions.append(
            {
                "session_id": row["session_id"],
                "charge_point_id": row["charge_point_id"],
                "connector_id": row["connector_id"],
                "site_id": sp.get("site_id") or row.get("site_id"),
                "node_id": sp.get("node_id") or row.get("node_id"),
                "setpoint_kw": sp.get("setpoint_kw"),
                "setpoint_a": sp.get("setpoint_a"),
                "measured_kw": row.get("current_power_kw"),
                "binding": sp.get("binding"),
                "soc_pct": row.get("soc_pct"),
                "energy_kwh": row.get("energy_kwh"),
                "price_tier": sp.get("price_tier"),
                "started_at": row.get("started_at"),
                "sampled_at": row.get("sampled_at"),
                "computed_at": sp.get("computed_at"),
                "plan": plans.get(row["session_id"]),
            }
        )
    seen = {s["session_id"] for s in sessions}
    for sid, sp in setpoints.items():  # a setpoint whose session row is gone (it is leaving)
        if sid not in seen:
            sessions.append(
                {
                    **{
                        k: sp.get(k)
                        for k in (
                            "session_id",
                            "charge_point_id",
                            "connector_id",
                            "site_id",
                            "node_id",
                            "setpoint_kw",
                            "setpoint_a",
                            "binding",
                            "price_tier",
                            "computed_at",
                        )
                    },
                    "measured_kw": None,
                    "soc_pct": None,
                    "energy_kwh": None,
                    "started_at": None,
                    "sampled_at": None,
                    "plan": None,
                }
            )
    sessions.sort(key=lambda s: (s["site_id"] or "", s["charge_point_id"] or "", s["connector_id"] or 0))

    ancestors: dict[str, set[str]] = {}
    for row in views.get("ancestors", []):
        ancestors.setdefault(row["node_id"], set()).add(row["ancestor_id"])
    below: dict[str, list[dict]] = {}
    for s in sessions:  # the charger's node if topology has it, else the breaker the session hangs on
        for node in ancestors.get(s["charge_point_id"]) or ancestors.get(s["node_id"] or "") or {s["node_id"]}:
            below.setdefault(node, []).append(s)

    def figures(row: dict) -> dict:
        under = below.get(row["node_id"], [])
        keys = (
            "node_id",
            "kind",
            "depth",
            "limit_kw",
            "breaker_limit_kw",
            "building_kw",
            "fixed_kw",
            "headroom_kw",
            "limited_by",
        )
        return {
            **{k: row.get(k) for k in keys},
            "setpoint_kw": _sum([s["setpoint_kw"] for s in under]),
            "measured_kw": _sum([s["measured_kw"] for s in under]),
            "sessions": len(under),
        }

    dr: dict[str, list[dict]] = {}
    for event in sorted(views.get("dr", []), key=lambda r: (r["ends_at"] or "", r["dr_event_id"])):
        dr.setdefault(event["site_id"], []).append({k: v for k, v in event.items() if k != "site_id"})
    prices = {row["site_id"]: row for row in views.get("prices", [])}
    nodes = sorted(views.get("nodes", []), key=lambda r: (r["site_id"] or "", r["depth"] or 0, r["node_id"]))
    sites = []
    for row in nodes:
        if row["kind"] != "site":
            continue
        site = {"site_id": row["node_id"], **figures(row)}
        del site["node_id"]
        site["dr_events"] = dr.get(row["node_id"], [])
        site["dr"] = site["dr_events"][0] if site["dr_events"] else None
        site["price"] = (
            {k: v for k, v in prices[row["node_id"]].items() if k != "site_id"} if row["node_id"] in prices else None
        )
        site["nodes"] = [
            figures(n) for n in nodes if n["site_id"] == row["node_id"] and n["kind"] not in ("site", "charger")
        ]
        sites.append(site)
    return {
        "at": _iso(datetime.now(UTC)),
        "dsn": redact(dsn),
        "sites": sites,
        "sessions": sessions,
        "alerts": sorted(
            views.get("alerts", []),
            key=lambda a: (a["severity"] != "critical", a["site_id"] or "", a["kind"], a["subject_id"]),
        ),
        "executor": chargers,
    }


def snapshot(
    dsn: str = DEFAULT_DSN,
    executor_url: str | None = DEFAULT_EXECUTOR_URL,
    *,
    password: str | None = None,
    timeout_s: float = 5.0,
) -> dict:
    """One status snapshot of a running pipeline (see :func:`build` for its shape); ``executor_url=None``
    leaves the chargers out. Raises :class:`StatusError` when the views cannot be read."""
    views = fetch_views(dsn, password=password, timeout_s=timeout_s)
    chargers = None if executor_url is None else fetch_chargers(executor_url, timeout_s=min(timeout_s, 3.0))
    return build(views, chargers, dsn)
