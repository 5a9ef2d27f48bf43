"""The simulator's ASGI app: the provider's API at the root, the control API under /_simulator."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from service.simulator.config import SimulatorConfig
from service.simulator.control_api import control_routes
from service.simulator.provider_api import provider_routes
from service.simulator.simulation import Simulation


def create_app(config: SimulatorConfig) -> Starlette:
    """`app.state.simulation` is the simulation; `aclose()` it when no lifespan ran (tests)."""
    simulation = Simulation(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await simulation.aclose()

    app = Starlette(
        routes=[Mount("/_simulator", routes=control_routes()), *provider_routes()],
        middleware=[Middleware(TrailingSlashTolerance)],
        lifespan=lifespan,
    )
    app.state.simulation = simulation
    return app


class TrailingSlashTolerance:
    """The provider answers `/conferencia/` as `/conferencia`, with no redirect (PHP adds it)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self._app(scope, receive, send)
