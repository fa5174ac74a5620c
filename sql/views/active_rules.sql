-- control.rules in force now (temporal filters on valid_from / valid_to; open bounds allowed), with
-- their precedence: safety 4 > utility 3 > partner 2 > operator 1.
CREATE MATERIALIZED VIEW active_rules AS
SELECT
    rule_id,
    source,
    scope,
    scope_id,
    action,
    limit_kw,
    CASE source WHEN 'safety' THEN 4 WHEN 'utility' THEN 3 WHEN 'partner' THEN 2 ELSE 1 END AS precedence
FROM control_rules
WHERE (valid_from IS NULL OR valid_from <= NOW()) AND (valid_to IS NULL OR valid_to > NOW());
