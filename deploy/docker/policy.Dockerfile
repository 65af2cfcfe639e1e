# PolicyService: generates candidate steps. On the shared torch layer (torch.Dockerfile). The published GPU
# image installs EXTRA=vllm (requirements/vllm.txt: vLLM and what it needs beyond torch's layer); the CPU variant
# installs EXTRA=policy (transformers; THINKMESH_POLICY_BACKEND=hf), which is what CI builds and runs here.
#
#   make images                     (CPU variant: ghcr.io/thinkmesh/thinkmesh-policy:0.1.0-cpu)
#   make images TORCH_VARIANT=cuda  (the GPU image:  ghcr.io/thinkmesh/thinkmesh-policy:0.1.0)
ARG BUILD_IMAGE=thinkmesh-build:0.1.0
ARG TORCH_IMAGE=ghcr.io/thinkmesh/thinkmesh-torch:0.1.0

# 1. The virtual environment: the locked EXTRA (torch itself stays in the base layer) and the wheel.
FROM ${BUILD_IMAGE} AS venv
ARG EXTRA=vllm
RUN install-lock "$EXTRA" /opt/torch

# 2. The runtime: torch's layer, the environment, an unprivileged user.
FROM ${TORCH_IMAGE}
RUN groupadd --system --gid 10001 thinkmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin thinkmesh
COPY --from=venv /opt/thinkmesh /opt/thinkmesh
# The root filesystem is read-only in the cluster: every cache (Hugging Face, Triton, torch compile, vLLM)
# lives under HOME, an emptyDir there.
ENV PATH=/opt/thinkmesh/bin:$PATH \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50052 9090
ENTRYPOINT ["thinkmesh"]
CMD ["serve", "policy", "--host", "0.0.0.0", "--port", "50052"]
