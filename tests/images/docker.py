"""The Docker side of `make test-images`: the docker CLI, bounded; a `Session` that makes a network, volumes and
containers from `kubelet.Pod`s and removes them all; the `Deployment` the tests see of the running set.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from e2e.helmchart import Rendered

from images.kubelet import Pod
from support.processes import wait_serving

# Loading a model on two busy cores, or warming the sandbox's zygote, takes seconds; two minutes means it is stuck.
STARTUP_TIMEOUT_S = 120.0
# The tests only ever dial 127.0.0.1: never through a proxy.
GRPC_OPTIONS = [("grpc.enable_http_proxy", 0)]


class DockerError(Exception):
    pass


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI, bounded; a failure raises with docker's own message."""
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise DockerError("no docker command on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"`docker {' '.join(args[:3])} …` did not finish within {timeout} s") from exc
    if check and proc.returncode != 0:
        raise DockerError(f"`docker {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr.strip()}")
    return proc


@dataclass
class Container:
    name: str
    pod: Pod

    def address(self, port: str = "grpc") -> str:
        """host:port of a named container port, published on the loopback only."""
        assert port in self.pod.ports, f"{self.pod.component} has no port {port}; has {sorted(self.pod.ports)}"
        published = docker("port", self.name, f"{self.pod.ports[port]}/tcp").stdout.split()
        assert published and published[0].startswith("127.0.0.1:"), f"{self.name}: published as {published}"
        return published[0]

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip() == "true"

    def state(self) -> str:
        return docker("inspect", "-f", "{{.State.Status}} (exit code {{.State.ExitCode}})", self.name).stdout.strip()

    def logs(self, tail: int | None = 200) -> str:
        proc = docker("logs", *(["--tail", str(tail)] if tail else []), self.name, check=False)
        return proc.stdout + proc.stderr

    def report(self) -> str:
        """The container's state and the end of its log, for assertion messages."""
        return f"--- {self.pod.component} ({self.name}): {self.state()}; docker logs --tail 200:\n{self.logs()}"


@dataclass
class Session:
    """A network, volumes and containers made for one test session, removed together by `close()`.

    `helper_image` prepares the volumes: it needs a shell with chgrp and chmod."""

    helper_image: str
    prefix: str = field(default_factory=lambda: f"thinkmesh-images-{uuid.uuid4().hex[:8]}")
    containers: dict[str, Container] = field(default_factory=dict)
    # Docker volume → the fsGroup it was prepared for.
    volumes: dict[str, int | None] = field(default_factory=dict)
    network: str | None = None

    @property
    def label(self) -> str:
        return f"thinkmesh.test-images={self.prefix}"

    def create_network(self) -> None:
        docker("network", "create", "--label", self.label, self.prefix)
        self.network = self.prefix

    def _volume(self, volume: str, fs_group: int | None) -> None:
        """A claim's volume, made on first use and owned as the kubelet leaves a volume for a pod with fsGroup:
        group fsGroup, group-writable, setgid so that what is made in it keeps the group."""
        if volume in self.volumes:
            if self.volumes[volume] != fs_group:
                raise DockerError(f"{volume}: mounted by pods with fsGroup {self.volumes[volume]} and {fs_group}")
            return
        docker("volume", "create", "--label", self.label, volume)
        self.volumes[volume] = fs_group
        if fs_group is None:
            return
        # What the kubelet does before such a pod starts, as root with the capabilities that takes alone.
        caps = ("--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "FSETID")
        self._run(
            f"fsgroup-{uuid.uuid4().hex[:4]}",
            ["--network", "none", "--user", "0:0", *caps, "--volume", f"{volume}:/volume", "--entrypoint", "sh"],
            self.helper_image,
            ["-c", f"chgrp {fs_group} /volume && chmod 2775 /volume"],
            timeout=60,
        )

    def start(self, pod: Pod) -> Container:
        """`docker run -d` the pod on the session's network, answering to its aliases, its ports published on
        127.0.0.1, after its init containers have run."""
        assert self.network, "create_network() first"
        for step in pod.init:  # the pod's init containers, each to completion, in order (as the kubelet)
            self.run_once(step, timeout=STARTUP_TIMEOUT_S)
        for volume, fs_group in pod.volumes.items():
            self._volume(volume, fs_group)
        name = f"{self.prefix}-{pod.component}"
        argv = ["run", "--detach", "--name", name, "--label", self.label, "--network", self.network]
        for alias in pod.aliases:
            argv += ["--network-alias", alias]
        for port in pod.ports.values():  # the tests reach them on the loopback only
            argv += ["--publish", f"127.0.0.1::{port}"]
        argv += [*pod.options, *(["--entrypoint", pod.entrypoint] if pod.entrypoint else []), pod.image, *pod.args]
        container = Container(name, pod)
        self.containers[pod.component] = container  # registered first: removed even if `run` fails half-way
        docker(*argv)
        return container

    def run_once(self, pod: Pod, *options: str, timeout: float) -> str:
        """Runs the pod to completion (a command, not a server), with more `docker run` options, off the network;
        its output, or DockerError."""
        for volume, fs_group in pod.volumes.items():
            self._volume(volume, fs_group)
        entrypoint = ["--entrypoint", pod.entrypoint] if pod.entrypoint else []
        name = f"{pod.component}-{uuid.uuid4().hex[:4]}"
        return self._run(name, [*pod.options, "--network", "none", *options, *entrypoint], pod.image, pod.args, timeout)

    def run_on_network(self, pod: Pod, entrypoint: str, args: list[str], *, timeout: float) -> str:
        """Runs a command in the pod's image, with its options, on the session's network (a client that resolves
        the Services' names as a pod does); its output, or DockerError."""
        name = f"{pod.component}-client-{uuid.uuid4().hex[:4]}"
        options = [*pod.options, "--network", self.network, "--entrypoint", entrypoint]
        return self._run(name, options, pod.image, args, timeout)

    def _run(self, name: str, options: list[str], image: str, args: tuple[str, ...] | list[str], timeout: float) -> str:
        name = f"{self.prefix}-{name}"
        try:
            proc = docker(
                "run", "--name", name, "--label", self.label, *options, image, *args, timeout=timeout, check=False
            )
        finally:
            docker("rm", "--force", name, check=False)
        if proc.returncode != 0:
            raise DockerError(f"`{' '.join(args)}` in {image} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def close(self) -> None:
        """Removes what this session made, by name; every step is tried, then the failures raised together."""
        errors = []
        steps: list[tuple[str, ...]] = [("rm", "--force", "--volumes", c.name) for c in self.containers.values()]
        if self.network:
            steps.append(("network", "rm", self.network))
        steps += [("volume", "rm", "--force", v) for v in self.volumes]
        for step in steps:
            for attempt in range(3):  # a volume is busy for a moment after its container went
                proc = docker(*step, timeout=60, check=False)
                if proc.returncode == 0 or "No such" in proc.stderr:
                    break
                time.sleep(1 + attempt)
            else:
                errors.append(f"docker {' '.join(step)}: {proc.stderr.strip()}")
        if errors:
            raise DockerError("could not clean up:\n" + "\n".join(errors))


@dataclass
class Deployment:
    """The running containers, by component, with the manifests they were started from and the API's bearer
    token."""

    manifests: Rendered
    session: Session
    token: str

    def __getitem__(self, component: str) -> Container:
        return self.session.containers[component]

    def report(self, *components: str) -> str:
        return "\n".join(self[c].report() for c in components)

    @contextmanager
    def explain(self, *components: str) -> Iterator[None]:
        """A failed assertion or call inside says what the containers logged."""
        try:
            yield
        except (AssertionError, grpc.RpcError) as exc:
            raise AssertionError(f"{exc}\n\n{self.report(*components)}") from exc

    def serving(self, component: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """The component's address on 127.0.0.1 once its gRPC health says SERVING."""
        container = self[component]
        try:
            address = container.address()
        except DockerError as exc:  # e.g. it exited at once: no port is published any more
            pytest.fail(f"{component}: {exc}\n{container.report()}", pytrace=False)
        try:
            wait_serving(address, timeout, alive=container.running)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{component}: {exc}\n{container.report()}", pytrace=False)
        return address

    @contextmanager
    def connect(self, component: str) -> Iterator[grpc.Channel]:
        """A channel to the component, once it serves."""
        with grpc.insecure_channel(self.serving(component), options=GRPC_OPTIONS) as channel:
            yield channel
