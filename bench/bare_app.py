"""The ingress baseline: a bare Starlette endpoint that reads the body and answers 202, served
exactly as `python -m service api` serves the real app (uvicorn.Server inside uvloop.run,
http=httptools, no access log, no log config, lifespan off). The ratio api / this is what the
service's own work (auth, validation, Postgres, Kafka, logging) costs per request.

    python bench/bare_app.py --port P
"""

from __future__ import annotations

import argparse

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def create(request: Request) -> Response:
    await request.body()
    return JSONResponse({"status": "accepted"}, status_code=202)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/conferences", create, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)


async def serve(port: int) -> None:
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            http="httptools",
            lifespan="off",
        )
    )
    await server.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))
