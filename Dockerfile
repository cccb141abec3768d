# Asgard Keeper images. Stages:
#   build   resolves the locked Python dependencies into /app/.venv (uv, no dev tools)
#   anvil   fetches the pinned anvil binary from npm (package-lock.json)
#   devnet  the keeper + anvil: `keeper devnet ...` for docker-compose's local chain
#   keeper  the default target: the daemon alone, non-root, with a health check
#
#   docker build -t asgard-keeper .                  # the keeper
#   docker build --target devnet -t asgard-devnet .  # the local chain image

FROM python:3.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv==0.13.8
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
# Dependencies first: this layer survives edits to the keeper's own code.
RUN uv sync --locked --no-dev --no-install-project
COPY keeper ./keeper
RUN uv sync --locked --no-dev --no-editable

FROM node:20-bookworm-slim AS anvil
WORKDIR /tools
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund && cp node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /anvil

FROM python:3.11-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --home-dir /home/keeper --create-home keeper
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/keeper
USER 10001
ENTRYPOINT ["keeper"]
CMD ["--help"]

FROM runtime AS devnet
COPY --from=anvil /anvil /usr/local/bin/anvil
# docker-compose mounts a volume here for the keeper's config; a new volume takes this owner.
USER root
RUN mkdir /shared && chown 10001 /shared
USER 10001
ENV ASGARD_ANVIL=/usr/local/bin/anvil
EXPOSE 8545

FROM runtime AS keeper
# Inside a container the health endpoint must be reachable from outside it, on a known port:
# these override [ops] in the config file (ASGARD_KEEPER_<SECTION>_<KEY> wins over the file).
# The database (checkpoint + transaction journal) lives on a volume, so it outlives the
# container; a database_path in the config file is overridden too: to move it, set the variable.
ENV ASGARD_KEEPER_OPS_METRICS_HOST=0.0.0.0 \
    ASGARD_KEEPER_OPS_METRICS_PORT=9108 \
    ASGARD_KEEPER_STORAGE_DATABASE_PATH=/var/lib/asgard-keeper/keeper.sqlite
# Owned by the keeper's uid: a new named volume mounted here takes this owner and mode. One
# keeper per volume: the database is locked by the keeper that has it open.
USER root
RUN install --directory --owner=10001 --group=10001 --mode=0700 /var/lib/asgard-keeper
USER 10001
VOLUME ["/var/lib/asgard-keeper"]
EXPOSE 9108
# SIGTERM (docker stop) cancels the daemon, which follows in-flight transactions for at most
# [ops] shutdown_grace_s (< 10 s, docker's default stop timeout) and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['ASGARD_KEEPER_OPS_METRICS_PORT'] + '/healthz', timeout=2)"]
CMD ["run", "--config", "/etc/asgard-keeper/keeper.toml", "--log-format", "json"]
