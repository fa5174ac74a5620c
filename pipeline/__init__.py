"""The `pipeline` CLI, its engines, transports, simulators and replay tools."""
