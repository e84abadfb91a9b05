# One image for both services; the command picks which:
#   docker build -t avatar-thumbnails:dev .
#   docker run avatar-thumbnails:dev                                   # accounts (default)
#   docker run avatar-thumbnails:dev python -m imaging_service         # imaging
# Runtime dependencies come from requirements-runtime.lock (hashes, binary wheels only but nkeys,
# which is published only as source), made by pip-compile from pyproject.toml within
# requirements.lock's versions (command in its header).

FROM python:3.11-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
COPY requirements-runtime.lock ./
# nkeys (pure Python) is built with the lock's setuptools, installed first from its hashes, not
# with whatever setuptools pip's build isolation would download unchecked.
RUN python -m venv /opt/venv \
    && sed -n '/^setuptools==/,/^ *#/{/^ *#/!p}' requirements-runtime.lock > /tmp/build.txt \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: --no-deps -r /tmp/build.txt \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: --no-binary=nkeys \
        --no-build-isolation -r requirements-runtime.lock
# gen/ holds the generated accounts/imaging packages (pyproject.toml maps them from there);
# devstack is copied only because pyproject.toml lists it among the packages.
COPY pyproject.toml ./
COPY gen ./gen
COPY devstack ./devstack
COPY accounts_service ./accounts_service
COPY imaging_service ./imaging_service
COPY grpc_telemetry ./grpc_telemetry
COPY grpc_guard ./grpc_guard
COPY env_settings ./env_settings
COPY object_keys ./object_keys
COPY credentials ./credentials
COPY image_policy ./image_policy
COPY service_logs ./service_logs
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11-slim-trixie
# A fixed high UID/GID that matches runAsUser/runAsGroup in deploy/k8s.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# MALLOC_ARENA_MAX=2: glibc gives every thread that contends for malloc its own arena (up to
# 8 x cores), and freed buffers stay mapped in them. The services' main processes have threads
# (S3 calls run in a thread pool), so they grow with arenas although nothing leaks. Measured by
# `make bench-arena` (bench/arena.py, 300 avatars through a private stack, twice per setting):
# the imaging main process ended at 104.0 / 104.2 MiB with glibc's default and 73.3 / 80.8 MiB
# with 2 (x0.71 / x0.78); accounts 85.0 / 91.4 -> 77.9 / 78.3 MiB. The single-threaded render
# processes are kept flat by malloc_trim (after a render that leaves one above 128 MiB) and
# recycling instead (`make bench-soak`).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
USER 10001:10001
# accounts gRPC, imaging gRPC, accounts and imaging Prometheus /metrics
EXPOSE 50051 50052 9101 9102
CMD ["python", "-m", "accounts_service"]
