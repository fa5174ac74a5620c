"""``sql/`` as objects: each file parsed by sqlglot's RisingWave dialect, its kind, connector, keys and
the relations it reads. The engine, the migration planner and the linter share this one model."""
