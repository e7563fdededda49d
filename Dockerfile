# syntax=docker/dockerfile:1.7
#
# One image runs the model server, the load generator and the operator:
#   rtbserve serve | rtbserve loadgen | rtbserve operator
#
# Multi-arch (Graviton arm64 and amd64). Without a Docker daemon, `make image` builds both with
# buildah on Debian bookworm bases made locally (hack/image.sh); with Docker and Docker Hub:
#   docker buildx build --platform linux/arm64,linux/amd64 -t <registry>/rtbserve:0.1.0 --push .
#
# Each platform's stages run on that platform (natively or under emulation), so the
# wheel's C extension and the venv's binary wheels always match the target CPU.
#
# At run time the root filesystem can be read-only: everything writes under /tmp
# (HOME, TMPDIR, MPLCONFIGDIR, XDG_CACHE_HOME; the server caches artifacts in $TMPDIR/rtbserve),
# so one writable volume at /tmp is all a pod needs.
#   docker run --read-only --tmpfs /tmp rtbserve:dev serve --model s3://bucket/models/ctr/

# Any Debian-based CPython 3.11 works: python:3.11-slim, or the bookworm bases hack/image.sh
# makes (the builder's base then has the compiler already, and no network is needed for it).
ARG PYTHON_IMAGE=python:3.11-slim
ARG BUILDER_IMAGE=${PYTHON_IMAGE}

# ---- builder: compile the wheel and install it with its dependencies into a venv ----
FROM ${BUILDER_IMAGE} AS builder

# Unpinned on purpose: Debian's security updates replace exact versions.
# hadolint ignore=DL3008
RUN command -v cc >/dev/null \
    || { apt-get update \
         && apt-get install -y --no-install-recommends build-essential \
         && rm -rf /var/lib/apt/lists/*; }

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    VIRTUAL_ENV=/opt/rtbserve

RUN python3 -m venv "$VIRTUAL_ENV"

WORKDIR /src

# Dependencies first, in their own layer: a source change does not reinstall them.
# The pip cache is a BuildKit cache mount: kept between builds, never in a layer.
COPY pyproject.toml ./
# Optional extras to include, comma-separated: `--build-arg EXTRAS=dask` builds the image the
# Dask scheduler, workers and `rtbserve train --dask` run (docs/distributed-training.md).
ARG EXTRAS=""
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    EXTRAS="$EXTRAS" python3 -c 'import os, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; extras = [e for e in os.environ["EXTRAS"].split(",") if e]; print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
       > /tmp/requirements.txt \
    && "$VIRTUAL_ENV/bin/pip" install -r /tmp/requirements.txt

# .dockerignore lets in only the packaging files and the Python packages.
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    "$VIRTUAL_ENV/bin/pip" wheel --no-deps --wheel-dir /wheels . \
    && "$VIRTUAL_ENV/bin/pip" install --no-deps /wheels/*.whl \
    && "$VIRTUAL_ENV/bin/pip" check \
    && "$VIRTUAL_ENV/bin/rtbserve" --version

# ---- runtime: the venv on a clean base, no compilers, non-root ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="rtbserve" \
      org.opencontainers.image.description="Low-latency XGBoost inference for real-time bidding" \
      org.opencontainers.image.licenses="Apache-2.0"

# uid/gid 10001: outside the range of any user a base image or host defines.
RUN groupadd --system --gid 10001 rtbserve \
    && useradd --system --uid 10001 --gid 10001 \
       --home-dir /tmp --no-create-home --shell /usr/sbin/nologin rtbserve

# The venv's python links to the base's python3.11, the same in both stages.
COPY --from=builder /opt/rtbserve /opt/rtbserve

# Nothing writes to the image at run time: no .pyc files, and every tool that keeps
# config or caches (matplotlib, XDG users) points at /tmp.
ENV PATH=/opt/rtbserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config

WORKDIR /tmp
# Numeric, so Kubernetes can enforce runAsNonRoot.
USER 10001:10001

# 9090: Thrift (framed, binary). 8080: /healthz, /readyz, /metrics.
EXPOSE 9090 8080

ENTRYPOINT ["rtbserve"]
CMD ["serve"]
