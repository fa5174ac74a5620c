"""Every test here runs on each embedded-engine backend (tests.kits.backends)."""

from tests.kits.backends import backend

__all__ = ["backend"]
