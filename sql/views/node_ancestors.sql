-- The ancestor closure of the breaker tree: one row per (node, ancestor-or-self), with the ancestor's
-- depth. Loads and reservations hanging on a node are summed into every breaker above it through this.
CREATE MATERIALIZED VIEW node_ancestors AS
SELECT node_id, site_id, anc0 AS ancestor_id, 0 AS ancestor_depth FROM node_paths WHERE anc0 IS NOT NULL
UNION ALL
SELECT node_id, site_id, anc1 AS ancestor_id, 1 AS ancestor_depth FROM node_paths WHERE anc1 IS NOT NULL
UNION ALL
SELECT node_id, site_id, anc2 AS ancestor_id, 2 AS ancestor_depth FROM node_paths WHERE anc2 IS NOT NULL
UNION ALL
SELECT node_id, site_id, anc3 AS ancestor_id, 3 AS ancestor_depth FROM node_paths WHERE anc3 IS NOT NULL
UNION ALL
SELECT node_id, site_id, anc4 AS ancestor_id, 4 AS ancestor_depth FROM node_paths WHERE anc4 IS NOT NULL
UNION ALL
SELECT node_id, site_id, anc5 AS ancestor_id, 5 AS ancestor_depth FROM node_paths WHERE anc5 IS NOT NULL;
