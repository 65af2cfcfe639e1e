"""Methods vLLM's workers gain for the policy (`worker_extension_cls`, set by the vllm backend): they run inside
each worker process, called through `collective_rpc` by name. Imported only there, by vLLM.
"""

from __future__ import annotations

from typing import Any


class PolicyWorkerExtension:
    """Mixed into vLLM's worker class: `self` is the worker (its `model_runner` holds the model)."""

    model_runner: Any
    reload_weights: Any  # the worker's own (vLLM's in-place reload under the worker's config)

    def reload_weights_from(self, weights_path: str) -> int:
        """Load the weights at `weights_path` into the running model (vLLM's own in-place reload), then make the
        CPU build's kernels read them; returns how many kernels were made again.

        On a CPU, vLLM packs an embedding's (and a tied LM head's) weight for its GEMM kernel after loading, and the
        kernel keeps a reference to the tensor it was packed from. An in-place reload packs the new weights from a
        scratch copy of the layer, copies the values into the layer's own weight and drops the scratch: the kernel
        is left reading memory that is no longer the weight (measured on an AMX CPU: the first token right, the
        rest garbage). Packing again from the layer's own weight, which now holds the new values, fixes it."""
        self.reload_weights(weights_path=weights_path)
        return _repack_cpu_embeddings(self.model_runner.get_model())


def _repack_cpu_embeddings(model: Any) -> int:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    repacked = 0
    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            repacked += 1
    return repacked
