# syntax=docker/dockerfile:1
# PolicyService on GPUs: vLLM's official image brings CUDA, torch and vLLM; thinkmesh goes on top with its
# "vllm" extra, whose ranges the base image already satisfies (so nothing large is reinstalled).
#
#   docker build -f deploy/docker/policy.Dockerfile -t ghcr.io/thinkmesh/thinkmesh-policy:0.1.0 .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# Keep the vLLM version in step with what services/policy is tested against.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0

# 1. The thinkmesh wheel (pure Python: built on a slim image, installed on the CUDA one).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY protos ./protos
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# 2. The runtime: vLLM's image, thinkmesh installed into its Python, an unprivileged user.
FROM ${VLLM_IMAGE}
COPY --from=wheel /wheels /wheels
# vLLM's image manages its system Python with uv (as vLLM's docs do for extra packages).
RUN uv pip install --system --no-cache "$(ls /wheels/thinkmesh-*.whl)[vllm]" \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 thinkmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin thinkmesh
# The root filesystem is read-only in the cluster: every cache (Hugging Face, Triton, torch compile, vLLM)
# lives under HOME, an emptyDir there.
ENV HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50052 9090
ENTRYPOINT ["thinkmesh"]
CMD ["serve", "policy", "--host", "0.0.0.0", "--port", "50052"]
