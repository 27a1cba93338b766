# jitnet server image. Build: `docker build -t jitnet .` (BuildKit, the default since Docker 23;
# with Docker 20.10 set DOCKER_BUILDKIT=1 for RUN --mount). deploy/build-images.sh builds both
# targets the compose file runs, passing the host's pip configuration as build secrets.
# Stages: builder (wheels) -> base (dependencies, the user) -> app (jitnet, non-root)
#         -> runtime (the default target: kernels compiled, serves on 50051); base -> loadtest
#         (compose profile "load"). What changes seldom comes first: a change to the code
#         rebuilds only jitnet's wheel, its install and the kernels; a README edit, nothing.
# No `# syntax=` line: it makes BuildKit pull a frontend image, and the built-in frontend of
# Docker 20.10 and later already knows RUN --mount; the base images are the only pulls.
#
# pip reaches its package index with the host's own settings, given as BuildKit secrets when the
# host has them (`--secret id=pip.conf,src=/etc/pip.conf`, id=pip-user.conf for
# ~/.config/pip/pip.conf, id=ca-certificates.crt for the CA bundle): mounted only for the RUN
# steps that download, never written to a layer. Without them pip uses PyPI and the image's CAs.

FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Wheels of every runtime dependency, from pyproject.toml alone: a change to the code neither
# downloads nor reinstalls them. (.dockerignore sends only what the build uses.)
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-user.conf,target=/root/.config/pip/pip.conf \
    --mount=type=secret,id=ca-certificates.crt,target=/etc/ssl/certs/ca-certificates.crt \
    python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt \
    && pip wheel --no-cache-dir -r requirements.txt -w /wheels/deps
COPY protos ./protos
COPY service ./service
COPY client ./client
# jitnet's own wheel (pip fetches its build backend, hence the secrets). README.md is only the
# package's long description: a stub here, so that editing the README rebuilds nothing.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-user.conf,target=/root/.config/pip/pip.conf \
    --mount=type=secret,id=ca-certificates.crt,target=/etc/ssl/certs/ca-certificates.crt \
    echo "jitnet: see README.md in the source repository." > README.md \
    && pip wheel --no-cache-dir --no-deps . -w /wheels/jitnet


# The dependencies and the user that serves.
FROM python:3.11-slim-bookworm AS base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/jitnet/numba
# Bind mounts of the builder's wheels instead of COPY: the wheels (~150 MB) never become a layer.
RUN --mount=type=bind,from=builder,source=/wheels/deps,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
# A fixed uid so files on the /data volume keep an owner across rebuilds. /data is created and
# owned before VOLUME below, so a new named volume starts out writable by this user.
RUN groupadd --system --gid 10001 jitnet \
    && useradd --system --uid 10001 --gid jitnet --create-home --home-dir /home/jitnet \
        --shell /usr/sbin/nologin jitnet \
    && mkdir -p /data "$NUMBA_CACHE_DIR" \
    && chown -R jitnet:jitnet /data /var/cache/jitnet
WORKDIR /home/jitnet


FROM base AS app
RUN --mount=type=bind,from=builder,source=/wheels/jitnet,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl
# Numeric, so the runtime (and Kubernetes' runAsNonRoot) can verify it is not root.
USER 10001:10001


# Load generator for `docker compose --profile load run --rm loadtest`: locust and the stubs.
FROM base AS loadtest
# The same secrets as the builder's (see the header).
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-user.conf,target=/root/.config/pip/pip.conf \
    --mount=type=secret,id=ca-certificates.crt,target=/etc/ssl/certs/ca-certificates.crt \
    pip install --no-cache-dir locust==2.47.0
COPY loadtest/locustfile.py /opt/loadtest/locustfile.py
RUN --mount=type=bind,from=builder,source=/wheels/jitnet,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl
USER 10001:10001
ENTRYPOINT ["locust", "-f", "/opt/loadtest/locustfile.py"]
CMD ["--headless", "-u", "10", "-r", "10", "-t", "30s", "--host", "nginx:50051", "--only-summary", "--exit-code-on-error", "1"]


FROM app AS runtime
# Compile every numba kernel into NUMBA_CACHE_DIR now, as the user that serves, so a container
# is SERVING within seconds. numba keys its cache on the CPU: on a host whose CPU differs from
# the build machine's, the server recompiles once at startup (the cache dir stays writable for
# that, and the healthcheck's start period allows for it).
RUN python -m jitnet.service.server.warmup
# 0.0.0.0: reachable from other containers. Grace 8 s: plain `docker stop` waits 10 s before
# SIGKILL; compose sets 10 s with stop_grace_period 20s.
ENV JITNET_HOST=0.0.0.0 \
    JITNET_PORT=50051 \
    JITNET_DATA_DIR=/data \
    JITNET_GRACE_SECONDS=8
VOLUME /data
EXPOSE 50051
# Exits 0 only when grpc.health.v1 says SERVING: kernels compiled, stored models loaded, not
# draining. Uses the port above; change both together.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["jitnet", "health", "--target", "127.0.0.1:50051"]
# The server drains on SIGTERM: health NOT_SERVING, in-flight calls finish within the grace.
STOPSIGNAL SIGTERM
# Runs the command; with a read-only root filesystem (or another uid) it first copies the
# build-time numba cache to a writable tmpfs, so the start stays warm (deploy/docker-entrypoint.sh).
COPY deploy/docker-entrypoint.sh /usr/local/bin/jitnet-entrypoint
ENTRYPOINT ["jitnet-entrypoint"]
CMD ["jitnet", "serve"]
