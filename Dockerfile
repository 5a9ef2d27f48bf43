# syntax=docker/dockerfile:1
# One image for every process: `python -m service {api|worker|reconcile|migrate|simulator}`.
# BASE_IMAGE: any image with Python 3.11 on PATH. `make image` passes a stand-in built from Debian
# packages where this one cannot be pulled (deploy/image/base.sh); everyone else keeps the default.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY service ./service
RUN uv sync --frozen --no-dev

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home conference
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY service ./service
COPY migrations ./migrations
# The topics' JSON Schemas: the api serves them (/schemas/*, /asyncapi.json).
COPY schemas ./schemas
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "service"]
CMD ["api", "--host", "0.0.0.0"]
