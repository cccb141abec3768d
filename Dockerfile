# Minimal image of the keeper CLI; the operations issue grows it (health check, compose, k8s).
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY keeper ./keeper
RUN uv sync --locked --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 keeper
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH
USER keeper
ENTRYPOINT ["keeper"]
CMD ["--help"]
