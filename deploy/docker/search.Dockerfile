# SearchService and the Celery search workers (one image, two commands). No torch: search only coordinates.
#
#   make images
#   docker run ghcr.io/thinkmesh/thinkmesh-search:0.1.0            # SearchService on :50054
#   docker run ghcr.io/thinkmesh/thinkmesh-search:0.1.0 worker     # a Celery worker (queue "search")
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=thinkmesh-build:0.1.0

# 1. The virtual environment: the locked "search" extra (Celery with Redis, answer grading) and the wheel.
FROM ${BUILD_IMAGE} AS venv
RUN install-lock search

# 2. The runtime.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 thinkmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin thinkmesh
COPY --from=venv /opt/thinkmesh /opt/thinkmesh
ENV PATH=/opt/thinkmesh/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50054 9090
ENTRYPOINT ["thinkmesh"]
CMD ["serve", "search", "--host", "0.0.0.0", "--port", "50054"]
