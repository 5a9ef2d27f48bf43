"""The chaos suite runs on the e2e lanes: real processes, broker, database and simulator."""

from tests.e2e.conftest import base  # noqa: F401 (a fixture, shared)
