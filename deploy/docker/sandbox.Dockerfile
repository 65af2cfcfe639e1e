# SandboxService: runs each reasoning step's Python. Slim and without torch: requirements/sandbox.txt holds
# sympy, numpy and the gRPC core.
#
#   make images      (scripts/images.sh builds BUILD_IMAGE from deploy/docker/build.Dockerfile first)
#   docker run -p 50051:50051 -e THINKMESH_SANDBOX_INSECURE=true ghcr.io/thinkmesh/thinkmesh-sandbox:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=thinkmesh-build:0.1.0

# 1. The virtual environment: the locked "sandbox" extra and the thinkmesh wheel, offline.
FROM ${BUILD_IMAGE} AS venv
RUN install-lock sandbox

# 2. The runtime: the same Python, the environment, an unprivileged user. (libseccomp, behind pyseccomp's
# per-run syscall filter, is part of every Debian base.)
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 thinkmesh \
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
