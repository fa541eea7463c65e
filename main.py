"""ragvslc command line: parses options and delegates to the engine in compare/."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from cli import console
from cli.common import CONTEXT, EXIT_CODES, version_text
from cli.context_need import context_need_cmd
from cli.data import corpora_app, models_app, serve_cmd, video_app
from cli.judge import judge_cmd
from cli.load import load_cmd
from cli.results import cost_cmd, export_cmd, recommend_cmd, report_cmd, retrieval_cmd, runs_cmd, score_cmd
from cli.run import demo_cmd, run_cmd

app = typer.Typer(
    help="Long context or RAG? Measure both on the same questions.",
    epilog="Environment: RAGVSLC_HOME (--home), RAGVSLC_DATA (--data-dir), RAGVSLC_DB (--db), "
    "RAGVSLC_BASE_URL (--base-url), OPENAI_API_KEY (the key sent to a --base-url server). " + EXIT_CODES,
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode=None,  # help text is plain: "[models]" and "[corpus]" stay as written
    pretty_exceptions_show_locals=False,  # locals can hold whole documents, or a key
)
app.add_typer(models_app, name="models")
app.add_typer(corpora_app, name="corpora")
app.add_typer(video_app, name="video")


def _print_version(value: bool) -> None:
    if value:
        console.out.print(version_text(Path(__file__).resolve().parent), highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Version (and git commit)."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(envvar="RAGVSLC_HOME", help="Cache root: models, RAG indexes, video timelines "
                     "(default ~/.cache/ragvslc)."),
    ] = None,
) -> None:
    # Set when a command runs, not when main is imported (importing it changes nothing).
    from compare.core.offline import offline_defaults

    offline_defaults()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if home is not None:  # the engine reads the variable where it needs the folder
        os.environ["RAGVSLC_HOME"] = str(home)


app.command("run")(run_cmd)
app.command("runs")(runs_cmd)
app.command("report")(report_cmd)
app.command("cost")(cost_cmd)
app.command("recommend")(recommend_cmd)
app.command("retrieval")(retrieval_cmd)
app.command("score")(score_cmd)
app.command("judge")(judge_cmd)
app.command("export")(export_cmd)
app.command("demo")(demo_cmd)
app.command("load")(load_cmd)
app.command("serve")(serve_cmd)
app.command("context-need")(context_need_cmd)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes the same clean path as Ctrl-C: rows flushed, managed server stopped."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(app())
