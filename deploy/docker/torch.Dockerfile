# The base layer of the policy, ppm and trainer images: torch alone, in /opt/torch (each image's virtual
# environment reaches it through a .pth file), so the three images share this one layer.
#
#   TORCH_VARIANT=cuda   torch and its CUDA libraries from requirements/torch-cuda.txt (the published GPU images;
#                        the NVIDIA container runtime brings the driver)
#   TORCH_VARIANT=cpu    the CPU wheel the Makefile installs (TORCH): what CI builds and runs here
#
# scripts/images.sh puts the chosen build into .whl/torch and tags this image thinkmesh-torch:TAG[-cpu].
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=thinkmesh-build:0.1.0

FROM ${BUILD_IMAGE} AS install
ARG TORCH_VARIANT=cuda
RUN if [ "$TORCH_VARIANT" = cuda ]; then \
      /opt/build/bin/pip install --no-cache-dir --no-index --find-links /wheels/torch --require-hashes --no-deps \
        --target /opt/torch -r /requirements/torch-cuda.txt; \
    else \
      /opt/build/bin/pip install --no-cache-dir --no-index --no-deps --target /opt/torch /wheels/torch/torch-*.whl; \
    fi

FROM ${PYTHON_IMAGE}
COPY --from=install /opt/torch /opt/torch
