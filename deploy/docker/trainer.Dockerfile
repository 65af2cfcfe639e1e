# TrainerService: self-evolution rounds (SFT and PPM training, publishing). On the shared torch layer
# (torch.Dockerfile): CUDA for the published image, the CPU build where CI runs it.
#
#   make images                     (CPU variant: ghcr.io/thinkmesh/thinkmesh-trainer:0.1.0-cpu)
#   make images TORCH_VARIANT=cuda  (the GPU image:  ghcr.io/thinkmesh/thinkmesh-trainer:0.1.0)
ARG BUILD_IMAGE=thinkmesh-build:0.1.0
ARG TORCH_IMAGE=ghcr.io/thinkmesh/thinkmesh-torch:0.1.0

# 1. The virtual environment: the locked "trainer" extra (torch itself stays in the base layer) and the wheel.
FROM ${BUILD_IMAGE} AS venv
RUN install-lock trainer /opt/torch

# 2. The runtime: torch's layer, the environment, an unprivileged user.
FROM ${TORCH_IMAGE}
RUN groupadd --system --gid 10001 thinkmesh \
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
