# syntax=docker/dockerfile:1
# SearchService and the Celery search workers (one image, two commands). No torch: search only coordinates.
#
#   docker build -f deploy/docker/search.Dockerfile -t ghcr.io/thinkmesh/thinkmesh-search:0.1.0 .
#   docker run ghcr.io/thinkmesh/thinkmesh-search:0.1.0                 # SearchService on :50054
#   docker run ghcr.io/thinkmesh/thinkmesh-search:0.1.0 worker          # a Celery worker (queue "search")
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# 1. The thinkmesh wheel.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY protos ./protos
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# 2. A virtual environment with the "search" extra (Celery with Redis, answer grading).
FROM ${PYTHON_IMAGE} AS venv
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/thinkmesh \
 && /opt/thinkmesh/bin/pip install --no-cache-dir "$(ls /wheels/thinkmesh-*.whl)[search]"

# 3. The runtime.
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
