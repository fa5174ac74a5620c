"""Replays of real days (ev2gym data) through the whole loop."""
