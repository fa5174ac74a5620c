"""The ``pipeline`` command: a thin click layer. :mod:`~.main` holds the group and registers one module per
command group; :mod:`~.errors` turns the project's root error into one line and exit status 1."""
