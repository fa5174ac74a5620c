-- Charging sessions as history, for analysts: one row per session of ocpp.transaction.events, from its
-- start (ended_at, energy and cost are null while it runs). Each session's events are read by MIN / MAX, so
-- an event delivered twice changes nothing.
--   energy_kwh:     meter stop - meter start (the charger's register; the final reading is the stop's own)
--   duration_s:     ended_at - started_at, on the charger's clock
--   peak_power_kw:  the highest power the charger reported during the session
--   cost:           an approximation from energy x price: the session's energy is spread evenly over its
--                   duration, and each tariff.price.signals slot of its site gets the share of the energy
--                   that falls in it at that slot's price_per_kwh. Where slots overlap, the later-starting
--                   one is in force from its start (as current_price_tier picks). Minutes with no price
--                   count nothing, and priced_share says how much of the session had one (1 = all).
--   binding:        what limited the session's setpoint for most of its time (as on
--                   ocpp.setpoint.commands), null when it never had a setpoint
-- On RisingWave this is a materialized view over the append-only source: it keeps every session for as long
-- as the view exists. The embedded engine keeps ocpp.transaction.events for a retention (EngineConfig
-- history_retention_days, 90 by default) in a file of its own (pipeline/engine/history.py).
CREATE MATERIALIZED VIEW session_history AS
WITH sessions AS (
    SELECT
        session_id,
        MAX(charge_point_id) AS charge_point_id,
        MAX(connector_id) AS connector_id,
        MAX(transaction_id) AS transaction_id,
        MAX(site_id) AS site_id,
        MAX(node_id) AS node_id,
        MIN(started_at) AS started_at,
        MAX(ended_at) AS ended_at,
        MAX(meter_start_kwh) AS meter_start_kwh,
        MAX(meter_stop_kwh) AS meter_stop_kwh,
        MAX(energy_kwh) AS energy_kwh,
        MAX(peak_power_kw) AS peak_power_kw,
        MAX(reason) AS stop_reason,
        MAX(binding) AS binding
    FROM ocpp_transaction_events
    GROUP BY session_id
),
slots AS (
    SELECT
        site_id,
        price_per_kwh,
        currency,
        valid_from,
        LEAST(valid_to, COALESCE(next_from, valid_to)) AS valid_to
    FROM (
        SELECT
            site_id,
            price_per_kwh,
            currency,
            valid_from,
            valid_to,
            LEAD(valid_from) OVER (PARTITION BY site_id ORDER BY valid_from) AS next_from
        FROM (
            SELECT
                site_id,
                price_per_kwh,
                currency,
                valid_from,
                valid_to,
                ROW_NUMBER() OVER (PARTITION BY site_id, valid_from ORDER BY price_per_kwh DESC) AS rn
            FROM tariff_price_signals
        ) AS ranked
        WHERE rn = 1
    ) AS ordered
)
-- One pass over sessions (a CTE read twice is planned twice on RisingWave): each session joined with the
-- price slots it overlaps, then summed back to one row.
SELECT
    s.session_id,
    s.charge_point_id,
    s.connector_id,
    s.transaction_id,
    s.site_id,
    s.node_id,
    s.started_at,
    s.ended_at,
    CASE
        WHEN s.ended_at IS NOT NULL THEN GREATEST(EXTRACT(EPOCH FROM s.ended_at) - EXTRACT(EPOCH FROM s.started_at), 0)
    END AS duration_s,
    COALESCE(s.energy_kwh, CASE WHEN s.meter_stop_kwh >= s.meter_start_kwh THEN s.meter_stop_kwh - s.meter_start_kwh END) AS energy_kwh,
    s.peak_power_kw,
    SUM(
        COALESCE(
            s.energy_kwh, CASE WHEN s.meter_stop_kwh >= s.meter_start_kwh THEN s.meter_stop_kwh - s.meter_start_kwh END
        ) * p.price_per_kwh
        * (EXTRACT(EPOCH FROM LEAST(s.ended_at, p.valid_to)) - EXTRACT(EPOCH FROM GREATEST(s.started_at, p.valid_from)))
        / (EXTRACT(EPOCH FROM s.ended_at) - EXTRACT(EPOCH FROM s.started_at))
    ) AS cost,
    MAX(p.currency) AS currency,
    SUM(
        (EXTRACT(EPOCH FROM LEAST(s.ended_at, p.valid_to)) - EXTRACT(EPOCH FROM GREATEST(s.started_at, p.valid_from)))
        / (EXTRACT(EPOCH FROM s.ended_at) - EXTRACT(EPOCH FROM s.started_at))
    ) AS priced_share,
    s.stop_reason,
    s.binding
FROM sessions AS s
LEFT JOIN slots AS p
    ON p.site_id = s.site_id
    AND s.ended_at > s.started_at
    AND p.valid_from < s.ended_at
    AND p.valid_to > s.started_at
GROUP BY
    s.session_id,
    s.charge_point_id,
    s.connector_id,
    s.transaction_id,
    s.site_id,
    s.node_id,
    s.started_at,
    s.ended_at,
    s.energy_kwh,
    s.meter_start_kwh,
    s.meter_stop_kwh,
    s.peak_power_kw,
    s.stop_reason,
    s.binding;
