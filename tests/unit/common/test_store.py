"""The model store: atomic publishing, the current pointer, lineage, pruning, concurrent publishers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.common.errors import InvalidInput, NotFound
from services.common.store import Lineage, ModelStore


def _writer(content: str):  # type: ignore[no-untyped-def]
    def write(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        (directory / "weights.bin").write_text(content)

    return write


def test_publish_makes_a_current_version_with_lineage(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.current("policy") is None
    first = store.publish("policy", _writer("a"), Lineage(base_model="tiny", round=0, source="bootstrap"))
    assert first.version == "v1"
    assert (first.path / "weights.bin").read_text() == "a"
    current = store.current("policy")
    assert current is not None and current.version == "v1"
    assert current.lineage.source == "bootstrap"
    second = store.publish("policy", _writer("b"), Lineage(round=1), make_current=False)
    assert second.version == "v2"
    assert store.current_name("policy") == "v1"
    store.promote("policy", "v2")
    assert store.current_name("policy") == "v2"
    assert [v.version for v in store.versions("policy")] == ["v1", "v2"]
    assert store.versions("ppm") == []


def test_a_failed_write_leaves_nothing_visible(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    def broken(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.publish("ppm", broken, Lineage())
    assert store.versions("ppm") == []
    assert store.current("ppm") is None
    assert not list((tmp_path / "models" / "ppm").iterdir())


def test_a_version_is_invisible_until_its_manifest_is_written(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    seen_during_write: list[int] = []

    def slow(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        seen_during_write.append(len(store.versions("policy")))

    store.publish("policy", slow, Lineage())
    assert seen_during_write == [0]
    assert len(store.versions("policy")) == 1


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        try:
            store.publish("policy", _writer(str(i)), Lineage(round=i), make_current=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    versions = store.versions("policy")
    assert [v.version for v in versions] == [f"v{i}" for i in range(1, 9)]
    assert sorted((v.path / "weights.bin").read_text() for v in versions) == sorted(str(i) for i in range(8))


def test_prune_keeps_the_newest_and_the_current(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for i in range(5):
        store.publish("policy", _writer(str(i)), Lineage(), make_current=(i == 0))
    removed = store.prune("policy", keep=2)
    assert removed == ["v2", "v3"]
    assert [v.version for v in store.versions("policy")] == ["v1", "v4", "v5"]
    with pytest.raises(InvalidInput):
        store.prune("policy", keep=0)


def test_import_copies_a_hugging_face_directory(tmp_path: Path) -> None:
    source = tmp_path / "hf"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "qwen2"}')
    store = ModelStore(tmp_path / "store")
    imported = store.import_directory("policy", source, Lineage(base_model="Qwen2.5-Math-1.5B", source=str(source)))
    assert (imported.path / "config.json").read_text() == '{"model_type": "qwen2"}'
    with pytest.raises(InvalidInput, match=r"no config\.json"):
        store.import_directory("policy", tmp_path, Lineage())


@pytest.mark.parametrize(
    ("kind", "version", "error"),
    [("critic", "v1", InvalidInput), ("policy", "latest", InvalidInput), ("policy", "v9", NotFound)],
)
def test_bad_names_are_clear_errors(tmp_path: Path, kind: str, version: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        ModelStore(tmp_path).get(kind, version)


def _chat_writer(directory: Path) -> None:
    (directory / "config.json").write_text("{}")
    (directory / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')


def test_the_prompt_format_is_decided_at_publishing_and_kept(tmp_path: Path) -> None:
    import json

    from services.common.store import prompt_format_of

    store = ModelStore(tmp_path)
    assert store.publish("policy", _writer("a"), Lineage()).prompt_format == "plain"
    chat = store.publish("policy", _chat_writer, Lineage())
    assert chat.prompt_format == "chat"  # the tokenizer has a chat template
    chosen = store.publish("policy", _chat_writer, Lineage(), prompt_format="plain")
    assert chosen.prompt_format == "plain" and prompt_format_of(chosen.path) == "plain"  # an explicit choice wins
    manifest = json.loads((chosen.path / "manifest.json").read_text())
    assert manifest["prompt_format"] == "plain"
    # A version published before formats were recorded reads as its tokenizer implies.
    del manifest["prompt_format"]
    (chat.path / "manifest.json").write_text(json.dumps(manifest))
    assert store.get("policy", chat.version).prompt_format == "chat"
    with pytest.raises(InvalidInput, match="unknown prompt format 'chatml'"):
        store.publish("policy", _writer("b"), Lineage(), prompt_format="chatml")


def test_a_published_version_is_readable_by_the_stores_group(tmp_path: Path) -> None:
    """safetensors writes its weights 0600 whatever the umask; the serving pods read them under other uids of the
    store's group."""

    def private(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        (directory / "model.safetensors").write_bytes(b"weights")
        (directory / "model.safetensors").chmod(0o600)
        (directory / "sub").mkdir(mode=0o700)
        (directory / "sub" / "part").write_text("x")
        (directory / "sub" / "part").chmod(0o600)

    version = ModelStore(tmp_path).publish("policy", private, Lineage())
    for path in (version.path / "model.safetensors", version.path / "sub" / "part"):
        assert path.stat().st_mode & 0o777 == 0o640
    assert (version.path / "sub").stat().st_mode & 0o750 == 0o750
