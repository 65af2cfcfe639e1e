"""A Kubernetes API client for the few pods that call the API (the trainer's rollout, the secrets Job).

`kubernetes` is imported inside the function: it is slow to import (its models) and only those pods need it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from services.common.errors import ThinkmeshError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


class KubeApiError(ThinkmeshError):
    """The Kubernetes API refused or failed a call, or cannot be reached; the message says what to change."""


def api_client() -> ApiClient:
    """An `ApiClient` from the pod's service account, or from the kubeconfig when not running in a pod.

    Raises `KubeApiError` when neither gives credentials.
    """
    from kubernetes import client, config

    # A private Configuration: loading into the client's global default would leak into every other
    # ApiClient in the process (and into tests).
    configuration = client.Configuration()
    # kubernetes.config has no annotations (unlike kubernetes.client), hence the ignores below.
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as in_cluster_error:
        # Outside a cluster (a laptop, CI) do what kubectl does. KUBECONFIG is read now, not at import as the
        # client's default is, so a variable set after start-up still counts.
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        except (config.ConfigException, OSError) as exc:
            raise KubeApiError(
                f"no Kubernetes credentials: not in a pod ({in_cluster_error}) and no usable kubeconfig ({exc})"
            ) from exc
    return client.ApiClient(configuration)
