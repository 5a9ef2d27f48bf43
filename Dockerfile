# syntax=docker/dockerfile:1
# One image for every process: `python -m service {api|worker|reconcile|migrate|simulator}`.

FROM python:3.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY service ./service
RUN uv sync --frozen --no-dev

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home conference
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY service ./service
COPY migrations ./migrations
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "service"]
CMD ["api", "--host", "0.0.0.0"]
