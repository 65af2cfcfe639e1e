"""A training stage as the cluster runs it in training.mode job: the chart's Job template (its ConfigMap), completed
by the trainer (`render_manifests`: an Indexed Job of training.job.nodes pods and a headless Service), run by the
kubelet (kubelet.py) in the trainer's CPU image, one container per completion index on a Docker network of their
own. Each answers to `<job>-<index>.<service>` as the headless Service makes it, so that torchrun's static
rendezvous at PET_MASTER_ADDR (`<job>-0.<job>`) reaches index 0; PET_NODE_RANK is the index the downward API gives.

One real SFT stage: a micro checkpoint, 16 curriculum rows, 4 steps of a global batch of 4, a checkpoint every 2
steps, two ranks of one process each over gloo (DDP), the inputs and the outputs on the store volume at the chart's
store.mountPath, written as the trainer's uid. The run is the module's fixture, shared by its checks: 11-22 s on 2
shared cores, most of it importing torch and transformers in each container; 18-31 s for the file with pytest's
own start (`time pytest -q -m images tests/images/test_training_job.py --durations=0`).

The first test is the translation alone, without Docker (it runs in `make test`, as test_kubelet.py does).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from e2e.helmchart import Rendered, render

from images.conftest import MAKE_IMAGES, Images
from images.docker import DockerError, Session, docker
from images.kubelet import CLUSTER_DOMAIN, COMPLETION_INDEX, Kubelet, Pod, Untranslated
from services.common.settings import load_settings
from services.math.curriculum import generate
from services.trainer.data import SFTConfig
from services.trainer.settings import TrainerSettings
from services.trainer.training.jobs import COMMAND, WORKER_MODULE, render_manifests
from services.trainer.training.settings import TrainingSettings
from services.trainer.training.spec import SPEC_FILE, TrainingResult, TrainingSpec
from support.tiny_models import write_chat_checkpoint

NODES = 2
STAGE = "r1-sft"
# Under the store's mount: the stage's directory as a round lays it out, and the inputs it trains from.
STAGE_DIR = "rounds/0001/train/sft"
INPUTS_DIR = "inputs"
# 4 steps of 4 sequences (2 per rank): enough for a checkpoint at 2 and 4 and a model; 16 rows, one epoch.
RECIPE = SFTConfig(max_steps=4, batch_size=4)
ROWS = 16
CHECKPOINT_STEPS = 2
# Both containers from start to exit took 10-20 s here (torch and transformers loaded twice on two busy cores, then
# the stage); this bounds a stuck rendezvous.
RUN_TIMEOUT_S = 300
# The uid and group the chart gives the trainer and its Jobs' pods (values.yaml trainer.podSecurityContext).
TRAINER_UID = 10005
STORE_GROUP = 10001

# Runs in a container of the training pod (its uid, security context and store mount): every file and directory
# under the stage's directory with owner, group and mode, and the JSON files the stage writes.
REPORT = """
import json, os, stat, sys
out = sys.argv[1]
files = {}
for root, dirs, names in os.walk(out):
    for name in dirs + names:
        path = os.path.join(root, name)
        st = os.lstat(path)
        files[os.path.relpath(path, out)] = [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)]
texts = {}
for name in ("result.json", "progress.json", "ranks/0.json", "ranks/1.json"):
    if os.path.isfile(os.path.join(out, name)):
        texts[name] = open(os.path.join(out, name)).read()
print(json.dumps({"files": files, "texts": texts}))
"""


def _render(images: Images, scratch: Path) -> Rendered:
    """The chart as the image checks render it for these images (conftest.py), in job mode: two pods of one GPU
    each, which here are two containers of one CPU process each."""
    values = {
        **images.image_values(),
        "clusterDomain": CLUSTER_DOMAIN,
        "training": {"mode": "job", "job": {"nodes": NODES, "gpusPerNode": 1}},
    }
    scratch.mkdir(parents=True, exist_ok=True)
    file = scratch / f"values-{uuid.uuid4().hex[:8]}.yaml"
    file.write_text(json.dumps(values))  # JSON is YAML
    return render(*(arg for path in [*images.values_files(), file] for arg in ("-f", str(path))))


def _training(chart: Rendered) -> TrainingSettings:
    """The trainer's training settings, as its pod reads them from the rendered ConfigMap."""
    return load_settings(TrainerSettings, environ=chart.settings("trainer")).training


def _store_mount(job: dict[str, Any]) -> str:
    """Where the training pods mount the store's claim: the chart's store.mountPath."""
    pod = job["spec"]["template"]["spec"]
    claims = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    (container,) = pod["containers"]
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims]
    return str(path)


def _spec(store: str, training: TrainingSettings) -> TrainingSpec:
    """The stage with its paths as the pods see them, under the store's mount."""
    return TrainingSpec(
        stage="sft",
        data=f"{store}/{INPUTS_DIR}/sft.jsonl",
        base=f"{store}/{INPUTS_DIR}/base",
        out=f"{store}/{STAGE_DIR}",
        recipe=RECIPE,
        strategy=replace(training.strategy(), checkpoint_steps=CHECKPOINT_STEPS),
    )


def _objects(chart: Rendered, spec: TrainingSpec, training: TrainingSettings) -> tuple[Rendered, dict[str, Any]]:
    """The cluster's objects once the trainer created the stage's (the chart's, its Service and Job), and the Job."""
    template = chart.training_job()
    assert template is not None, "no training Job template in job mode"
    service, job = render_manifests(template, str(spec.path(SPEC_FILE)), STAGE, training)
    return Rendered([*chart.objects, service, job]), job


def _env(pod: Pod) -> dict[str, str]:
    pairs = [pod.options[i + 1] for i, option in enumerate(pod.options) if option == "--env"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_the_training_job_translates_to_one_pod_per_index(tmp_path: Path) -> None:
    chart = _render(Images.from_env(), tmp_path)
    training = _training(chart)
    assert (training.training_mode, training.job_kind, training.job_nodes) == ("job", "indexed", NODES)
    spec = _spec(_store_mount(chart.training_job() or {}), training)
    objects, job = _objects(chart, spec, training)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    kubelet = Kubelet(objects, scratch=tmp_path / "k", volume_prefix="t", host_cpus=2, images={}, host_gpus=False)
    security = job["spec"]["template"]["spec"]["securityContext"]
    ids = (security["runAsUser"], security["runAsGroup"], security["fsGroup"])
    assert ids == (TRAINER_UID, STORE_GROUP, STORE_GROUP), "the trainer's uid; the store's group"

    pods = kubelet.pods(job)
    assert [(p.name, p.component) for p in pods] == [(f"{name}-{i}", f"training-{i}") for i in range(NODES)]
    for index, pod in enumerate(pods):
        env = _env(pod)
        # torchrun's static rendezvous: this pod's rank from the downward API, index 0 under the Service.
        assert env["PET_NODE_RANK"] == str(index) and env["PET_NNODES"] == str(NODES)
        assert env["PET_MASTER_ADDR"] == f"{name}-0.{name}" and env["PET_NPROC_PER_NODE"] == "1"
        assert f"{name}-{index}.{name}" in pod.aliases
        assert f"{name}-{index}.{name}.{namespace}.svc.{CLUSTER_DOMAIN}" in pod.aliases
        assert pod.ports == {"rendezvous": training.job_rendezvous_port}
        assert (pod.entrypoint, *pod.args) == (*COMMAND, "-m", WORKER_MODULE, str(spec.path(SPEC_FILE)))
        # The trainer's uid, the store's group, the hardening; no GPU on a CPU host (the CPU image trains on gloo).
        hardening = {f"{TRAINER_UID}:{STORE_GROUP}", "--read-only", "--cap-drop=ALL", "no-new-privileges"}
        assert hardening <= set(pod.options) and "--gpus" not in pod.options
        assert any(o.endswith(f":{_store_mount(job)}") for o in pod.options)
    with_gpus = replace(kubelet, host_gpus=True, scratch=tmp_path / "g").pod(job, 0)
    assert "--gpus" in with_gpus.options

    # The index reaches the pod as the Job controller puts it, an annotation read through the downward API.
    (rank,) = [v for v in container["env"] if v["name"] == "PET_NODE_RANK"]
    assert rank["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{COMPLETION_INDEX}']"

    def translated(change: Callable[[dict[str, Any]], object], objects: Rendered = objects) -> tuple[Pod, ...]:
        changed = copy.deepcopy(job)
        change(changed)
        return replace(kubelet, manifests=objects, scratch=tmp_path / uuid.uuid4().hex).pods(changed)

    def untranslated(change: Callable[[dict[str, Any]], object], objects: Rendered = objects) -> str:
        with pytest.raises(Untranslated) as caught:
            translated(change, objects)
        return str(caught.value)

    # A GPU runtime and a priority have no meaning here; the rest stays strict, each failure with its reason.
    assert len(translated(lambda j: j["spec"]["template"]["spec"].update(runtimeClassName="nvidia"))) == NODES
    assert len(translated(lambda j: j["spec"]["template"]["spec"].update(priorityClassName="training"))) == NODES
    assert "all run at once" in untranslated(lambda j: j["spec"].update(parallelism=1))
    assert "podFailurePolicy not translated" in untranslated(lambda j: j["spec"].update(podFailurePolicy={}))
    assert "completionMode Sparse" in untranslated(lambda j: j["spec"].update(completionMode="Sparse"))
    gvisor = untranslated(lambda j: j["spec"]["template"]["spec"].update(runtimeClassName="gvisor"))
    assert "runtimeClassName not translated" in gvisor
    other = {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['other']"}}}
    unknown = untranslated(lambda j: j["spec"]["template"]["spec"]["containers"][0]["env"].append(other))
    assert "fieldRef metadata.annotations['other']" in unknown
    # Without its headless Service (the trainer creates it beside the Job) the pods' names would not resolve.
    assert f"no headless Service {name}" in untranslated(lambda j: None, objects=Rendered([*chart.objects, job]))


# --- in Docker ------------------------------------------------------------------------------------------------


def _write_inputs(directory: Path, spec: TrainingSpec) -> None:
    """The stage's inputs on this host, for the trainer's uid to copy onto the store: a micro checkpoint, curriculum
    rows as `thinkmesh curriculum sample` prints them, and the spec (as `TrainingSpec.write` writes it)."""
    write_chat_checkpoint(directory / "base")
    rows = [problem.to_json() for problem in generate(1, ROWS, seed=0)]
    lines = [json.dumps({key: row[key] for key in ("id", "question", "answer", "solution")}) for row in rows]
    (directory / "sft.jsonl").write_text("\n".join(lines) + "\n")
    (directory / SPEC_FILE).write_text(spec.to_json())
    for path in (directory, *directory.rglob("*")):  # readable by the pods' uid
        path.chmod(0o755 if path.is_dir() else 0o644)


def _in_pod(pod: Pod, what: str, entrypoint: str, *args: str) -> Pod:
    """A command in the pod's image, with its uid, security context and mounts (run with `Session.run_once`)."""
    return replace(pod, component=f"{pod.component}-{what}", entrypoint=entrypoint, args=args, init=())


@dataclass(frozen=True)
class Stage:
    """The stage as the containers left it: its spec, and what REPORT found under its directory."""

    spec: TrainingSpec
    files: dict[str, tuple[int, int, int, bool]]  # path under `out` → uid, gid, mode, is a directory
    texts: dict[str, str]  # REPORT's JSON files by path under `out`
    logs: str  # both containers' state and log

    def model(self) -> dict[str, tuple[int, int, int, bool]]:
        """The trained model's directory and what it holds."""
        return {path: stat for path, stat in self.files.items() if path == "model" or path.startswith("model/")}

    def read(self, name: str) -> Any:
        assert name in self.texts, f"no {name} under {self.spec.out}; has {sorted(self.files)}\n{self.logs}"
        return json.loads(self.texts[name])


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    """Both indexes of the stage's Job run to the end, each in its container, as the kubelet translates them."""
    images = Images.from_env()
    if images.torch_variant != "cpu":
        pytest.skip("the CPU images' check: two CPU ranks over gloo (a CUDA trainer shards with FSDP over GPUs)")
    try:
        host_cpus = int(docker("info", "--format", "{{.NCPU}}", timeout=30).stdout)
        engine_error = ""
    except DockerError as exc:
        engine_error = str(exc)
    if engine_error:  # failed outside the `except`, so that the message stands alone
        pytest.fail(f"no Docker engine answers ({engine_error}); start one, then {MAKE_IMAGES}", pytrace=False)
    root = tmp_path_factory.mktemp("training-job")
    chart = _render(images, root)
    training = _training(chart)
    store = _store_mount(chart.training_job() or {})
    spec = _spec(store, training)
    objects, job = _objects(chart, spec, training)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    images.check_present({images.python, container["image"]})
    inputs = root / "inputs"
    _write_inputs(inputs, spec)

    session = Session(helper_image=images.python)
    kubelet = Kubelet(
        objects, scratch=root / "volumes", volume_prefix=session.prefix, host_cpus=host_cpus, images={},
        host_gpus=False,
    )  # fmt: skip
    pods = kubelet.pods(job)
    try:
        session.create_network()
        # The trainer writes the spec onto the store before it creates the Job; the base and the data are there.
        copy = (
            f"mkdir -p {spec.out} {store}/{INPUTS_DIR} && cp -R /inputs/base /inputs/sft.jsonl {store}/{INPUTS_DIR}/"
            f" && cp /inputs/{SPEC_FILE} {spec.path(SPEC_FILE)}"
        )
        session.run_once(_in_pod(pods[0], "inputs", "sh", "-c", copy), "--volume", f"{inputs}:/inputs:ro", timeout=60)
        containers = [session.start(pod) for pod in pods]
        exits = [docker("wait", c.name, timeout=RUN_TIMEOUT_S).stdout.strip() for c in containers]
        logs = "\n".join(c.report() for c in containers)
        assert exits == ["0"] * NODES, f"the containers exited with {exits}\n{logs}"
        report = json.loads(session.run_once(_in_pod(pods[0], "report", "python", "-c", REPORT, spec.out), timeout=60))
    finally:
        session.close()
    return Stage(spec, {path: tuple(stat) for path, stat in report["files"].items()}, report["texts"], logs)


@pytest.mark.images
def test_both_ranks_train_and_rank_0_writes_the_result(stage: Stage) -> None:
    result = TrainingResult.from_json(json.dumps(stage.read("result.json")))
    assert (result.world_size, result.ranks, result.steps, result.sharding) == (NODES, (0, 1), 4, "ddp"), stage.logs
    assert result.resumed_from_step == 0 and result.out == str(stage.spec.path("model"))
    assert result.examples == ROWS and result.tokens > 0
    for rank in range(NODES):  # each rank took part, in the same world
        took_part = stage.read(f"ranks/{rank}.json")
        assert (took_part["rank"], took_part["world_size"], took_part["steps"]) == (rank, NODES, 4)
        assert took_part["tokens"] > 0
    assert sum(stage.read(f"ranks/{rank}.json")["tokens"] for rank in range(NODES)) == result.tokens
    assert stage.read("progress.json")["step"] == 4


@pytest.mark.images
def test_the_stage_checkpoints_on_the_store(stage: Stage) -> None:
    """A checkpoint every 2 steps, both kept (Strategy.keep_checkpoints): what a restarted Job resumes from."""
    checkpoints = {path for path, (*_, is_dir) in stage.files.items() if is_dir and path.count("/") == 1}
    assert {"checkpoints/checkpoint-2", "checkpoints/checkpoint-4"} <= checkpoints, sorted(stage.files)


@pytest.mark.images
def test_the_model_is_the_trainers_in_the_stores_group(stage: Stage) -> None:
    """Written whole by the trainer's uid, in the store's group (the volume's fsGroup, kept by its setgid
    directories)."""
    model = stage.model()
    whole = {"model", "model/model.safetensors", "model/config.json", "model/tokenizer.json"}
    assert whole <= model.keys(), sorted(stage.files)
    for path, (uid, gid, mode, is_dir) in model.items():
        assert (uid, gid) == (TRAINER_UID, STORE_GROUP), (path, uid, gid)
        assert not is_dir or mode & 0o2000, (path, oct(mode))


@pytest.mark.images
def test_the_model_is_readable_by_the_stores_group(stage: Stage) -> None:
    """The policy and PPM pods (uids 10001 and 10002, the store's group) load what the trainer (10005) wrote —
    safetensors writes its weights 0600 whatever the umask, so the worker shares them with the group."""
    unreadable = {}
    for path, (_, _, mode, is_dir) in stage.model().items():
        wanted = 0o050 if is_dir else 0o040  # a directory: read and search
        if mode & wanted != wanted:
            unreadable[path] = oct(mode)
    assert not unreadable, f"not readable by the group: {unreadable}"
