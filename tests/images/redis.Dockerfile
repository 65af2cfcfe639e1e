# The Celery broker of `make test-images`: Debian's redis-server on the same base as the thinkmesh images, so it
# builds where no registry but Debian's answers (the chart's redis:7.4.2-alpine cannot be pulled there).
#
#   DOCKER_BUILDKIT=0 docker build --build-arg PYTHON_IMAGE=thinkmesh/python:3.11-bookworm \
#     -t thinkmesh-test/redis - < tests/images/redis.Dockerfile
ARG PYTHON_IMAGE=thinkmesh/python:3.11-bookworm
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
# The package's own unprivileged user; the tests run it as the chart's redis uid anyway.
USER redis
EXPOSE 6379
# In memory only: nothing is saved, so the root filesystem may be read-only.
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
