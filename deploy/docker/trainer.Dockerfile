# syntax=docker/dockerfile:1
# TrainerService on GPUs: SFT and PPM training rounds, model publishing.
# The CUDA runtime image carries the driver-facing libraries; pip picks torch's CUDA wheel from PyPI (the
# default Linux wheel is the CUDA build), so the image follows pyproject's torch range.
#
#   docker build -f deploy/docker/trainer.Dockerfile -t ghcr.io/thinkmesh/thinkmesh-trainer:0.1.0 .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# 1. The thinkmesh wheel.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY protos ./protos
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# 2. A virtual environment with the "trainer" extra, on the runtime's own Python (Ubuntu 24.04: 3.12).
FROM ${CUDA_IMAGE} AS venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/thinkmesh \
 && /opt/thinkmesh/bin/pip install --no-cache-dir "$(ls /wheels/thinkmesh-*.whl)[trainer]"

# 3. The runtime: CUDA, Python, the environment, an unprivileged user.
FROM ${CUDA_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 thinkmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin thinkmesh
COPY --from=venv /opt/thinkmesh /opt/thinkmesh
# HOME is an emptyDir in the cluster (read-only root): Hugging Face and torch caches go there.
ENV PATH=/opt/thinkmesh/bin:$PATH \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50055 9090
ENTRYPOINT ["thinkmesh"]
CMD ["serve", "trainer", "--host", "0.0.0.0", "--port", "50055"]
