# syntax=docker/dockerfile:1
# SandboxService: runs each reasoning step's Python. Slim and without torch: the "sandbox" extra pulls only
# sympy and numpy (tests/e2e/test_images.py resolves it and checks).
#
#   docker build -f deploy/docker/sandbox.Dockerfile -t ghcr.io/thinkmesh/thinkmesh-sandbox:0.1.0 .
#   docker run -p 50051:50051 -e THINKMESH_SANDBOX_INSECURE=true ghcr.io/thinkmesh/thinkmesh-sandbox:0.1.0
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# 1. The thinkmesh wheel, built from the source tree (nothing else of the tree reaches the image).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY protos ./protos
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# 2. A virtual environment with the wheel and its "sandbox" extra.
FROM ${PYTHON_IMAGE} AS venv
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/thinkmesh \
 && /opt/thinkmesh/bin/pip install --no-cache-dir "$(ls /wheels/thinkmesh-*.whl)[sandbox]"

# 3. The runtime: the same Python, the environment, an unprivileged user.
FROM ${PYTHON_IMAGE}
# libseccomp backs pyseccomp's per-run syscall filter.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libseccomp2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 thinkmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin thinkmesh
COPY --from=venv /opt/thinkmesh /opt/thinkmesh
ENV PATH=/opt/thinkmesh/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["thinkmesh"]
CMD ["serve", "sandbox", "--host", "0.0.0.0", "--port", "50051"]
