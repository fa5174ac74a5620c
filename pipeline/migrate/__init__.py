"""``pipeline migrate``: declarative migrations of ``sql/`` to RisingWave or the embedded engine.

``sql/`` is the desired state. Like SQLMesh's plan/apply, the migrator parses every object with
sqlglot, compares normalized-SQL hashes with the catalog table on the target, and plans drops
(dependents first) and creates (in dependency order); ``apply`` runs the plan under a lock, stopping at
the first failure. The commands are plain functions in :mod:`pipeline.migrate.commands` (``plan``, ``apply``,
``status``, ``diff``, ``lint``); the other modules:

* :mod:`~pipeline.migrate.model`: the plain data (steps, plans, results) and errors;
* :mod:`~pipeline.migrate.planner`: desired + applied state -> ordered steps;
* :mod:`~pipeline.migrate.changes`: breaking / non-breaking / unknown, via sqlglot's diff;
* :mod:`~pipeline.migrate.kafka`: apply-time Kafka settings injected into connector WITH clauses;
* :mod:`~pipeline.migrate.targets`: one adapter per engine, the catalog table and the lock;
* :mod:`~pipeline.migrate.lint`: what cannot run, with file and line;
* :mod:`~pipeline.migrate.render` and :mod:`~pipeline.cli.migrate`: terminal output and click.
"""
