"""Commands about inputs and the engine: models, servers, QA sets, videos."""

from __future__ import annotations

import json
import statistics
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import console, jsonout
from cli.common import CONTEXT, JsonOpt, fail, interruptible


def _group(help_text: str) -> typer.Typer:
    # Locals in a traceback can hold a document's whole text (or a key): never print them.
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_show_locals=False,
                       context_settings=CONTEXT, rich_markup_mode=None)


class OcrChoice(StrEnum):
    """`video ingest --ocr` (corpora/video.py OCR_ENGINES; a test checks the two agree)."""

    rapidocr = "rapidocr"
    tesseract = "tesseract"


models_app = _group("Embedded models that install from PyPI.")
corpora_app = _group("QA sets: list the kinds, check and import your own.")
video_app = _group("Videos as timestamped timelines (OCR + speech).")

# One line per `[corpus] kind`; tests check that every kind the spec accepts has one.
CORPUS_KINDS = {
    "needle": "a fact planted in a book (Les Misérables) at set lengths x depths; variants single, "
              "multi, paraphrase, distractor",
    "babi": "bAbI facts planted through a book; evidence = where each supporting fact landed",
    "aggregate": "one fact planted N times in a book among near-miss decoys: count / list / which-first "
                 "questions that need every copy (RAG at k < N must miss some)",
    "leval": "an L-Eval long-document QA subset (quality, tpo, sci_fi, natural_question, ...)",
    "jsonl": "your own documents.jsonl + questions.jsonl (check with `ragvslc corpora import DIR`)",
    "hf": "HF-datasets-style JSON / JSONL / Parquet rows through a field mapping "
          "(check with `ragvslc corpora import PATH --map question=input,...`)",
    "beir": "BEIR corpus.jsonl + queries.jsonl + qrels/<split>.tsv: retrieval only (RAG scope = \"corpus\")",
    "video_needle": "long videos built from real clips with on-screen and spoken needles",
    "video_qa": "your video(s) + questions.jsonl, read as OCR + speech timelines",
    "activitynet": "temporal QA (when / what) on real ActivityNet captions",
    "python": "your own builder: factory = \"pkg.mod:make\" returning a Corpus, options = {...}",
}


def serve_cmd(
    model: Annotated[str | None, typer.Option(help="Model name or local HF folder.")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    max_model_len: Annotated[int, typer.Option(help="Context window to serve.")] = 32768,
) -> None:
    """Start a managed vLLM server and keep it up until Ctrl-C."""
    import time

    from compare.serving import weights as models
    from compare.serving.server import ManagedServer, ServerConfig, ServerError

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
        Path, typer.Argument(help="Folder with documents.jsonl + questions.jsonl, or one L-Eval JSONL; "
                                  "with --map: a JSON / JSONL / Parquet file or a folder of shards.")
    ],
    mapping: Annotated[str | None, typer.Option(
        "--map", help="Read HF-datasets-style rows: our_field=their_column, comma-separated, e.g. "
                      "question=input,answers=answers,document=context,id=_id (fields: question, "
                      "document, answers, id, doc_id, choices, evidence, answer_start, tags=a+b).")] = None,
    split: Annotated[str | None, typer.Option(help="With --map: the split's shards of a folder.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="With --map: the first N questions.")] = None,
) -> None:
    """Validate a QA set strictly; every problem is reported with its file and line."""
    from corpora.jsonl import CorpusError, import_summary

    if mapping is None and (split is not None or limit is not None):
        fail("--split and --limit go with --map")
    try:
        s = import_summary(path) if mapping is None else _mapped_summary(path, mapping, split, limit)
    except CorpusError as exc:
        fail(str(exc))  # bad input: exit 2, like every other command
    chars = s["chars_per_document"]
    formats = ", ".join(f"{k}: {v}" for k, v in s["answer_formats"].items())
    rows = f" from {s['rows']} rows" if "rows" in s else ""
    spec = s.get("spec") or f'kind = "jsonl", path = "{path}"'
    console.out.print(
        f"ok: {s['name']} — {s['documents']} documents{rows}, {s['questions']} questions ({formats}), "
        f"{s['with_evidence']} with evidence; scored by "
        f"{', '.join(f'{k}: {v}' for k, v in s['metrics'].items())}; "
        f"{chars['min']:,}–{chars['max']:,} chars/doc "
        f"(median {chars['median']:,}); sha256 {s['sha256'][:12]}…\n"
        f"use it with [corpus] {spec}", highlight=False, markup=False, soft_wrap=True,
    )


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _mapped_summary(path: Path, mapping: str, split: str | None, limit: int | None) -> dict[str, Any]:
    """`corpora import --map`: the HF-style rows read as a run would read them, described."""
    from corpora.hf_import import load_hf
    from corpora.records import CorpusError, metric_counts

    fields: dict[str, str] = {}
    for part in (p.strip() for p in mapping.split(",") if p.strip()):
        ours, eq, theirs = part.partition("=")
        if not eq or ours.strip() in fields:
            what = "names a field twice" if eq else "is not our_field=their_column"
            raise CorpusError("--map", [f"--map: {part!r} {what}"])
        fields[ours.strip()] = theirs.strip()
    corpus = load_hf(path, fields, split=split, limit=limit)
    sizes = sorted(len(d.text) for d in corpus.documents.values())
    formats: dict[str, int] = {}
    for ex in corpus.examples:
        fmt = str(ex.tags.get("answer_format", "none"))
        formats[fmt] = formats.get(fmt, 0) + 1
    table = ", ".join(f"{k} = {_toml(v)}" for k, v in fields.items())
    extra = "".join(f", {k} = {_toml(v) if isinstance(v, str) else v}"
                    for k, v in (("split", split), ("limit", limit)) if v is not None)
    return {
        "name": corpus.name, "rows": corpus.params["rows"], "documents": len(corpus.documents),
        "questions": len(corpus.examples), "with_evidence": sum(1 for ex in corpus.examples if ex.evidence),
        "answer_formats": formats, "metrics": metric_counts(corpus.examples),
        "sha256": corpus.params["sha256"],
        "chars_per_document": {"min": sizes[0], "median": int(statistics.median(sizes)), "max": sizes[-1]},
        "spec": f'kind = "hf", path = {_toml(str(path))}, map = {{ {table} }}{extra}',
    }


@video_app.command("ingest")
def video_ingest(
    file: Annotated[Path, typer.Argument(help="A video or audio file (.wav, .mp3, .flac: speech only).")],
    fps: Annotated[float, typer.Option(help="Frames sampled per second for OCR.")] = 1.0,
    scene: Annotated[float | None, typer.Option(help="Also sample on scene cuts above this.")] = None,
    no_ocr: Annotated[bool, typer.Option("--no-ocr", help="Skip on-screen text.")] = False,
    no_asr: Annotated[bool, typer.Option("--no-asr", help="Skip speech.")] = False,
    ocr: Annotated[
        OcrChoice, typer.Option("--ocr", help="OCR engine: rapidocr (scene text) or tesseract (clean pages).")
    ] = OcrChoice.rapidocr,
    asr_model: Annotated[
        str, typer.Option(help="Speech model: tiny.en or base (from PyPI packages).")
    ] = "tiny.en",
    asr_beam: Annotated[
        int, typer.Option(help="Speech beam size (1-10; 5 chosen by the spoken-needle benchmark).")
    ] = 5,
) -> None:
    """Turn a video or audio file into the timeline both pipelines read (cached by file hash +
    settings)."""
    from corpora.asr import AsrError
    from corpora.ocr import OcrError
    from corpora.video import IngestSettings, VideoError, ingest
    from corpora.video_spec import ingest_report

    try:
        settings = IngestSettings(fps=fps, scene_threshold=scene, ocr=not no_ocr, asr=not no_asr,
                                  ocr_engine=ocr.value,  # type: ignore[arg-type]  # one of OCR_ENGINES
                                  asr_model=asr_model, asr_beam_size=asr_beam)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))
    try:
        with interruptible():
            got = ingest(file, settings, progress=lambda stage, done, total: console.say(
                f"{stage}: {done:.0f}/{total:.0f} s"))
    except (VideoError, OcrError, AsrError) as exc:
        fail(str(exc))
    console.out.print(ingest_report(got), highlight=False, markup=False)


@corpora_app.command("list")
def corpora_list(as_json: JsonOpt = False) -> None:
    """The corpus kinds a run spec's `[corpus] kind` accepts, a line each, with their options."""
    rows = corpus_kinds()
    if as_json:
        console.emit_json({"corpora": rows})
        return
    console.table([{**r, "options": ", ".join(r["options"])} for r in rows], list(jsonout.CORPUS_FIELDS))


def corpus_kinds() -> list[dict[str, Any]]:
    """From the corpus registry, so a new kind cannot be left off the list (a kind without a
    line above is described by its spec's docstring)."""
    from compare.core.registry import CORPORA
    from compare.run import components  # noqa: F401  (registers the built-in kinds)

    rows = []
    for kind, entry in CORPORA.items():
        doc = (entry.spec.__doc__ or "").strip().split("\n")[0]
        rows.append({"kind": kind, "description": CORPUS_KINDS.get(kind, doc),
                     "options": [f for f in entry.spec.model_fields if f != "kind"]})
    return rows


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Known models and whether they are prepared."""
    from compare.serving import weights as models

    rows = [jsonout.model_json(r) for r in models.list_models()]
    if as_json:
        console.emit_json({"models": rows})
        return
    console.table(
        rows, ["name", "default", "chat", "context_tokens", "prepared", "size_bytes", "path", "note"]
    )


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str | None, typer.Argument(help="Model name (default: the embedded default).")] = None,
    force: Annotated[bool, typer.Option(help="Convert again even if prepared.")] = False,
) -> None:
    """Join and verify a model's GGUF (its packages installed: the [models] extra for the
    default), convert it once for vLLM."""
    from compare.serving import weights as models

    try:
        with interruptible():
            path = models.prepare(name or models.DEFAULT_MODEL, force=force, progress=console.say)
    except models.ModelError as exc:
        fail(str(exc))
    console.out.print(str(path))
