-- Fleet plans: per session, when it leaves and the energy it still needs, from the most trusted source
-- that says (docs/architecture.md, "Plans"): the EV's own departure_at / energy_needed_kwh on
-- ocpp.active.sessions (OCPP 2.0.1 NotifyEVChargingNeeds), else a session plan on session.plans, else a
-- charger plan (one whose departure_at is after the session started), else the site file's defaults
-- (default_departure_min: the next such minute of the day, UTC, after the session started;
-- default_energy_kwh), the charger's before the site's. Each of the two is taken on its own.
--   energy_needed_kwh counts from the session's start, as energy_kwh does: remaining = needed - delivered;
--   a target_soc_pct plan needs (target - soc_pct) % of battery_kwh (soc_pct unknown: from 0 %).
--   left_s is the time from the session's latest meter reading (when remaining was measured) to departure.
--   taper_factor (>= 1) is how much longer the remaining energy takes than at the rate the EV takes now,
--              as its acceptance tapers while its battery fills (CC-CV): known when the EV reports its SoC
--              and the plan gives battery_kwh (the need then ends at end_soc_pct = soc + 100 x remaining /
--              battery, at most 100), else 1. The curve assumed: full rate up to 80 % SoC, then falling
--              linearly to 15 % of it at 100 % (f(x) = 1 - 0.0425 (x - 80)), so the SoC span above
--              taper_soc_pct = max(soc, 80) takes ln(f(taper) / f(end)) / 0.0425 SoC-points' time at
--              full rate; the factor sets that, with the span below 80 %, against the plain span at the
--              rate now, f(taper_soc_pct). Plans time the remaining energy as remaining_kwh x taper_factor.
-- A session with no departure or no need anywhere has no row: it is allocated as before plans.
CREATE MATERIALIZED VIEW session_plan_targets AS
WITH merged AS (
    SELECT
        t.session_id,
        t.charge_point_id,
        t.site_id,
        t.started_at,
        t.seen_at,
        COALESCE(s.energy_kwh, 0) AS delivered_kwh,
        s.soc_pct,
        s.departure_at AS ev_departure_at,
        s.energy_needed_kwh AS ev_needed_kwh,
        CASE WHEN ps.plan_id IS NOT NULL THEN ps.plan_id ELSE pc.plan_id END AS plan_id,
        CASE WHEN ps.plan_id IS NOT NULL THEN ps.source ELSE pc.source END AS plan_source,
        CASE WHEN ps.plan_id IS NOT NULL THEN ps.departure_at ELSE pc.departure_at END AS plan_departure_at,
        CASE WHEN ps.plan_id IS NOT NULL THEN ps.energy_needed_kwh ELSE pc.energy_needed_kwh END AS plan_needed_kwh,
        CASE WHEN ps.plan_id IS NOT NULL THEN ps.target_soc_pct ELSE pc.target_soc_pct END AS plan_target_soc_pct,
        CASE WHEN ps.plan_id IS NOT NULL THEN ps.battery_kwh ELSE pc.battery_kwh END AS plan_battery_kwh,
        DATE_TRUNC('day', t.started_at)
            + COALESCE(c.default_departure_min, st.default_departure_min) * INTERVAL '1 minute' AS default_departure_at,
        COALESCE(c.default_energy_kwh, st.default_energy_kwh) AS default_needed_kwh
    FROM session_telemetry AS t
    JOIN ocpp_active_sessions AS s ON s.session_id = t.session_id
    LEFT JOIN session_plans AS ps ON ps.session_id = t.session_id
    LEFT JOIN session_plans AS pc ON pc.charge_point_id = t.charge_point_id AND pc.departure_at > t.started_at
    LEFT JOIN site_topology AS c ON c.node_id = t.charge_point_id AND c.kind = 'charger'
    LEFT JOIN site_topology AS st ON st.node_id = t.site_id AND st.kind = 'site'
),
chosen AS (
    SELECT
        session_id,
        charge_point_id,
        site_id,
        seen_at,
        delivered_kwh,
        COALESCE(
            ev_departure_at,
            plan_departure_at,
            CASE
                WHEN default_departure_at > started_at THEN default_departure_at
                ELSE default_departure_at + INTERVAL '1 day'
            END
        ) AS departure_at,
        CASE
            WHEN ev_departure_at IS NOT NULL THEN 'ev'
            WHEN plan_departure_at IS NOT NULL THEN plan_source
            ELSE 'site'
        END AS departure_from,
        CASE
            WHEN ev_needed_kwh IS NOT NULL THEN ev_needed_kwh
            WHEN plan_needed_kwh IS NOT NULL THEN plan_needed_kwh
            WHEN plan_target_soc_pct IS NOT NULL
                THEN delivered_kwh + (plan_target_soc_pct - COALESCE(soc_pct, 0)) / 100.0 * plan_battery_kwh
            ELSE default_needed_kwh
        END AS energy_needed_kwh,
        CASE
            WHEN ev_needed_kwh IS NOT NULL THEN 'ev'
            WHEN plan_id IS NOT NULL THEN plan_source
            ELSE 'site'
        END AS need_from,
        plan_id,
        soc_pct,
        plan_battery_kwh
    FROM merged
),
remains AS (
    SELECT
        *,
        CASE WHEN energy_needed_kwh > delivered_kwh THEN energy_needed_kwh - delivered_kwh ELSE 0.0 END AS remaining_kwh
    FROM chosen
    WHERE departure_at IS NOT NULL AND energy_needed_kwh IS NOT NULL
),
spans AS (
    SELECT
        *,
        LEAST(soc_pct + 100.0 * remaining_kwh / plan_battery_kwh, 100.0) AS end_soc_pct,
        GREATEST(soc_pct, 80.0) AS taper_soc_pct
    FROM remains
)
SELECT
    session_id,
    charge_point_id,
    site_id,
    departure_at,
    energy_needed_kwh,
    delivered_kwh,
    remaining_kwh,
    CAST(EXTRACT(EPOCH FROM (departure_at - seen_at)) AS DOUBLE PRECISION) AS left_s,
    departure_from,
    need_from,
    plan_id,
    CASE
        WHEN soc_pct IS NULL OR plan_battery_kwh IS NULL OR end_soc_pct <= soc_pct THEN 1.0
        ELSE GREATEST(
            (
                GREATEST(LEAST(end_soc_pct, 80.0) - soc_pct, 0.0)
                + CASE
                    WHEN end_soc_pct > taper_soc_pct
                        THEN LN((1 - 0.0425 * (taper_soc_pct - 80)) / (1 - 0.0425 * (end_soc_pct - 80))) / 0.0425
                    ELSE 0.0
                END
            ) * (1 - 0.0425 * (taper_soc_pct - 80)) / (end_soc_pct - soc_pct),
            1.0
        )
    END AS taper_factor
FROM spans;
