# The build stage every image starts from (local, never pushed): the wheelhouse that scripts/images.sh downloaded
# from the lock (.whl/py: every locked package, hash-checked; .whl/torch: the torch build of TORCH_VARIANT), the
# lock itself, and the thinkmesh wheel built from the source tree with the locked build backend. The images
# install offline from here (install-lock.sh), so no build step reaches a package index.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
COPY .whl /wheels
COPY requirements /requirements
COPY deploy/docker/install-lock.sh /usr/local/bin/install-lock
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --no-index --find-links /wheels/py --require-hashes \
      -r /requirements/build.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY protos ./protos
RUN /opt/build/bin/pip wheel --no-cache-dir --no-index --no-build-isolation --no-deps --wheel-dir /dist . \
 && rm -rf /src/build
