"""The health probe the chart renders when TLS is on, run against a real thinkmesh server with mutual TLS.

The kubelet's own gRPC probe speaks plaintext only, so with TLS the chart probes with a short Python health
check that presents the pod's certificate. This runs exactly the rendered script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from e2e.helmchart import NAMESPACE, name, render
from support.certs import make_certs
from support.processes import REPO, server_process

ECHO = [sys.executable, "-m", "support.echo_service"]


def _run(probe: list[str]) -> int:
    return subprocess.run(probe, capture_output=True, text=True, timeout=30).returncode


def test_the_rendered_tls_probe_passes_only_a_serving_server(tmp_path: Path) -> None:
    sandbox = render("--set", "tls.enabled=true", "--set", "tls.existingSecret=tls").container("sandbox")
    command = sandbox["readinessProbe"]["exec"]["command"]
    python, flag, script, tls_dir, address, server_name, timeout = command
    # Liveness asks the same server for the name that stays SERVING while it answers at all.
    *same, liveness_name = sandbox["livenessProbe"]["exec"]["command"]
    assert same[:6] == command[:6] and liveness_name == "thinkmesh.liveness"
    assert (python, flag, tls_dir, address) == ("python3", "-c", "/etc/thinkmesh/tls", "127.0.0.1:50051")
    assert server_name == f"{name('sandbox')}.{NAMESPACE}.svc.cluster.local"

    # The pod's Secret: its certificate (server and client at once), key and the CA.
    certs = make_certs(tmp_path)
    secret = tmp_path / "tls"
    secret.mkdir()
    shutil.copy(certs.server_cert, secret / "tls.crt")
    shutil.copy(certs.server_key, secret / "tls.key")
    shutil.copy(certs.ca, secret / "ca.crt")
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "THINKMESH_ECHO_TLS_CERT": str(secret / "tls.crt"),
        "THINKMESH_ECHO_TLS_KEY": str(secret / "tls.key"),
        "THINKMESH_ECHO_TLS_CA": str(secret / "ca.crt"),
        "THINKMESH_ECHO_READY_DELAY_S": "3",
    }
    with server_process(ECHO, env) as (_, listening):
        port = listening.rsplit(":", 1)[1]
        # The test certificate names localhost; in the cluster the name is the Service's.
        probe = [sys.executable, "-c", script, str(secret), f"127.0.0.1:{port}", "localhost", timeout]

        assert _run(probe) != 0, "passed while the server was still NOT_SERVING"
        assert _run([*probe, liveness_name]) == 0, "a server that answers, still loading, failed liveness"
        deadline = time.monotonic() + 20
        while _run(probe) != 0:
            assert time.monotonic() < deadline, "the probe never passed once the server was SERVING"
            time.sleep(0.2)

        wrong_name = [*probe[:5], "someone-else.example", timeout]
        assert _run(wrong_name) != 0, "a certificate for another name was accepted"
        no_client_cert = tmp_path / "no-client-cert"
        no_client_cert.mkdir()
        shutil.copy(certs.ca, no_client_cert / "ca.crt")
        shutil.copy(certs.client_cert, no_client_cert / "tls.crt")
        shutil.copy(certs.server_key, no_client_cert / "tls.key")  # a key that does not match the certificate
        assert _run([*probe[:3], str(no_client_cert), *probe[4:]]) != 0
