-- tariff.price.signals: prices valid on [valid_from, valid_to), e.g. a day-ahead curve (append-only).
CREATE SOURCE tariff_price_signals (
    site_id VARCHAR,
    tariff_id VARCHAR,
    price_per_kwh DOUBLE PRECISION,
    currency VARCHAR,
    price_tier VARCHAR,
    valid_from TIMESTAMPTZ,
    valid_to TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'tariff.price.signals'
) FORMAT PLAIN ENCODE JSON;
