-- pipeline.alerts: the alerts view as an upsert topic. Key: alert_id; a cleared alert is tombstoned.
CREATE SINK pipeline_alerts FROM alerts
WITH (
    connector = 'kafka',
    topic = 'pipeline.alerts',
    primary_key = 'alert_id'
) FORMAT UPSERT ENCODE JSON KEY ENCODE TEXT;
