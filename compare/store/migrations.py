"""The store's schema, as an ordered, append-only list of named migrations.

A database records the name of every migration it has applied (databases from before names
were recorded list their count; they gain the names on open), so a new column or table is a
new entry at the end, never an edit of an old one, and every existing results file keeps
opening. Inserts name their columns, so a column added here never shifts another's value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import duckdb

from compare.core.secrets import redact_json


def redact_stored_secrets(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None = None) -> list[str]:
    """Take secrets out of runs stored before they were kept out on write (issue 32): a header's
    literal value in `runs.spec`, a secret flag's value in a server record, a remembered key.
    Each run changed gets a note in `runs.redacted` (what and when), which the report shows;
    returns the run ids changed. Idempotent: `ragvslc score` runs it again at no cost."""
    where = f"WHERE run_id IN ({', '.join('?' * len(run_ids))})" if run_ids else ""
    changed: list[str] = []
    rows = con.execute(f"SELECT run_id, spec, server, redacted FROM runs {where}",
                       list(run_ids or [])).fetchall()
    for run_id, spec, server, note in rows:
        new_spec, a = redact_json(json.loads(spec) if spec else {}, "spec")
        new_server, b = redact_json(json.loads(server) if server else {}, "server")
        sessions = con.execute("SELECT session, server FROM run_sessions WHERE run_id = ?",
                               [run_id]).fetchall()
        cleaned = [(n, *redact_json(json.loads(s) if s else {}, f"run_sessions[{n}].server"))
                   for n, s in sessions]
        fields = [*a, *b, *(p for _, _, ps in cleaned for p in ps)]
        if not fields:
            continue
        notes = [*(json.loads(note) if note else []), {
            "at": datetime.now(UTC).isoformat(timespec="seconds"), "by": "migration redact_stored_secrets",
            "fields": fields}]
        con.execute("UPDATE runs SET spec = ?, server = ?, redacted = ? WHERE run_id = ?",
                    [json.dumps(new_spec), json.dumps(new_server), json.dumps(notes), run_id])
        for n, clean, ps in cleaned:
            if ps:
                con.execute("UPDATE run_sessions SET server = ? WHERE run_id = ? AND session = ?",
                            [json.dumps(clean), run_id, n])
        changed.append(run_id)
    return changed


# A migration is SQL, or a function of the connection where rows must be rewritten in Python.
Migration = tuple[str, "str | Callable[[duckdb.DuckDBPyConnection], object]"]

MIGRATIONS: tuple[Migration, ...] = (
    ("initial_schema", """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        created_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        status VARCHAR NOT NULL,
        corpus VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        base_url VARCHAR,
        concurrency INTEGER NOT NULL,
        git_sha VARCHAR,
        spec JSON NOT NULL,
        corpus_params JSON NOT NULL,
        server JSON NOT NULL
    );
    CREATE TABLE examples (
        run_id VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        doc_ids JSON NOT NULL,
        question VARCHAR NOT NULL,
        answers JSON NOT NULL,
        evidence JSON NOT NULL,
        tags JSON NOT NULL,
        doc_tokens INTEGER,
        PRIMARY KEY (run_id, example_id)
    );
    CREATE TABLE predictions (
        run_id VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        pipeline VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        params JSON NOT NULL,
        answer VARCHAR NOT NULL,
        error VARCHAR,
        context_tokens INTEGER NOT NULL,
        truncated_tokens INTEGER NOT NULL,
        prompt_tokens INTEGER,
        cached_tokens INTEGER,
        output_tokens INTEGER,
        ttft_ms DOUBLE,
        e2e_ms DOUBLE,
        tpot_ms DOUBLE,
        itl_ms DOUBLE[],
        retrieval_ms DOUBLE NOT NULL,
        total_ms DOUBLE,
        finish_reason VARCHAR,
        retrieved JSON NOT NULL,
        route VARCHAR,
        seq INTEGER NOT NULL,
        resumed BOOLEAN NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id, example_id, pipeline, params_hash)
    );
    CREATE TABLE scores (
        run_id VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        pipeline VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        value DOUBLE,
        PRIMARY KEY (run_id, example_id, pipeline, params_hash, metric)
    );
    CREATE TABLE server_stats (
        run_id VARCHAR NOT NULL,
        session INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        PRIMARY KEY (run_id, session, name)
    );
    """),
    ("index_stats", """
    CREATE TABLE index_stats (
        run_id VARCHAR NOT NULL,
        pipeline VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        doc_id VARCHAR NOT NULL,
        build_s DOUBLE NOT NULL,
        n_chunks INTEGER NOT NULL,
        bytes BIGINT NOT NULL,
        cache_hit BOOLEAN NOT NULL,
        PRIMARY KEY (run_id, pipeline, params_hash, doc_id)
    );
    """),
    ("prediction_attempts", "ALTER TABLE predictions ADD COLUMN attempts INTEGER DEFAULT 1;"),
    ("price_sheets", """
    CREATE TABLE price_sheets (
        run_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        sheet JSON NOT NULL,
        used_at TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    """),
    ("retrieval_eval", """
    CREATE TABLE retrieval_eval (
        eval_id VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        corpus VARCHAR NOT NULL,
        corpus_params JSON NOT NULL,
        config VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        params JSON NOT NULL,
        k INTEGER,
        budget_tokens INTEGER,
        recall DOUBLE,
        mrr DOUBLE,
        n_examples INTEGER NOT NULL,
        mean_context_tokens DOUBLE,
        build_s DOUBLE
    );
    """),
    # Which replica served the request (its base URL): affinity and failover are visible per row.
    ("prediction_replica", "ALTER TABLE predictions ADD COLUMN replica VARCHAR;"),
    # A multi-request answer's requests, each with its own timing (routers' fallbacks).
    ("prediction_steps", "ALTER TABLE predictions ADD COLUMN steps JSON;"),
    # The metric each question is judged by in the headline (its corpus declares it).
    ("example_primary_metric", "ALTER TABLE examples ADD COLUMN primary_metric VARCHAR;"),
    # LLM-as-judge verdicts, asked once per row and judge configuration (compare/run/judge.py).
    ("judgements", """
    CREATE TABLE judgements (
        run_id VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        pipeline VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        judge_model VARCHAR NOT NULL,
        prompt_hash VARCHAR NOT NULL,
        verdict DOUBLE,
        raw VARCHAR NOT NULL,
        judged_at TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id, example_id, pipeline, params_hash, judge_model, prompt_hash)
    );
    """),
    # Each row's pipeline role (long_context / retrieval / router), declared by its pipeline
    # class; rows stored before roles were recorded get theirs from compare/store/views.py.
    ("prediction_role", "ALTER TABLE predictions ADD COLUMN role VARCHAR;"),
    # Tokens a request wrote to a provider's prompt cache (usage's cache-creation count, where
    # the endpoint reports one): a hosted cache write is priced above a plain input token.
    ("prediction_cache_write_tokens", "ALTER TABLE predictions ADD COLUMN cache_write_tokens INTEGER;"),
    # What embedding an index took (pipelines/index.py BuildStats): the tokens embedded (an
    # endpoint's usage, or the local tokenizer's count; NULL: not known), the endpoint model that
    # embedded them (NULL: in-process, priced by time) and the embedding seconds within build_s.
    ("index_stats_embeddings", """
    ALTER TABLE index_stats ADD COLUMN embed_tokens BIGINT;
    ALTER TABLE index_stats ADD COLUMN embed_model VARCHAR;
    ALTER TABLE index_stats ADD COLUMN embed_s DOUBLE;
    """),
    # Every session of a run (the first, and each resume) with the configuration it ran with:
    # a resume against another server appends here instead of overwriting runs.server, and each
    # prediction row names the session (configuration) that produced it.
    ("run_sessions", """
    CREATE TABLE run_sessions (
        run_id VARCHAR NOT NULL,
        session INTEGER NOT NULL,
        started_at TIMESTAMP NOT NULL,
        git_sha VARCHAR,
        server JSON NOT NULL,
        corpus_params JSON NOT NULL,
        PRIMARY KEY (run_id, session)
    );
    ALTER TABLE predictions ADD COLUMN session INTEGER;
    """),
    # The question's embedding tokens as an embeddings endpoint billed them (RAG and routers'
    # retrieval through `embed_base_url`); NULL: embedded in-process (priced by time) or none.
    ("prediction_embed_tokens", "ALTER TABLE predictions ADD COLUMN embed_tokens INTEGER;"),
    # The LLM judge's controls (compare/run/judge.py): replies built from the corpus itself whose
    # right verdict is known (the gold must pass; the question restated, another question's gold,
    # an empty or "I don't know" reply must fail), asked once per judge model and prompt, so its
    # control accuracy is stored with the judge it measures.
    ("judge_controls", """
    CREATE TABLE judge_controls (
        run_id VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        control VARCHAR NOT NULL,
        judge_model VARCHAR NOT NULL,
        prompt_hash VARCHAR NOT NULL,
        reply VARCHAR NOT NULL,
        expected DOUBLE NOT NULL,
        verdict DOUBLE,
        raw VARCHAR NOT NULL,
        judged_at TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id, example_id, control, judge_model, prompt_hash)
    );
    """),
    # The run id of the spec a retrieval-only evaluation measured (the id a `run` of that spec
    # gets), so a report shows its own runs' evaluations only; NULL: stored before, unattributed.
    ("retrieval_eval_run_id", "ALTER TABLE retrieval_eval ADD COLUMN run_id VARCHAR;"),
    # The label the pipeline gives itself ("RAG k=4", compare.core.protocols.Described), stored
    # like its role so the report never derives it from knob names; NULL: stored before.
    ("prediction_label", "ALTER TABLE predictions ADD COLUMN label VARCHAR;"),
    # What the last `run` / `demo` command produced, so `ragvslc report` without `--run` shows
    # that (one row per run id; a new command replaces them).
    ("last_command", """
    CREATE TABLE last_command (
        command VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id)
    );
    """),
    # A load run's requests (compare/run/load.py, issue 28): the step that sent each (`rate=0.5`,
    # `concurrency=4`), when it was due and when it really went out (ms from the step's start)
    # and the wait between (a concurrency slot, or the generator's own lag); and each step's
    # record: how it ended (done, saturated, incomplete, skipped), how long it ran and what the
    # server did meanwhile (/metrics deltas), summed over the step's sessions.
    ("load_steps", """
    ALTER TABLE predictions ADD COLUMN load_step VARCHAR;
    ALTER TABLE predictions ADD COLUMN scheduled_ms DOUBLE;
    ALTER TABLE predictions ADD COLUMN sent_ms DOUBLE;
    ALTER TABLE predictions ADD COLUMN queue_ms DOUBLE;
    CREATE TABLE load_steps (
        run_id VARCHAR NOT NULL,
        pipeline VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        step VARCHAR NOT NULL,
        rate DOUBLE,
        concurrency INTEGER,
        requests INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        note VARCHAR,
        sessions INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        duration_s DOUBLE NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        server_deltas JSON NOT NULL,
        load JSON NOT NULL,
        idle_run_id VARCHAR,
        PRIMARY KEY (run_id, pipeline, params_hash, step)
    );
    """),
    # Secrets out of old runs (issue 32): where a run's stored record had a secret taken out
    # (what and when, a JSON list of notes; NULL: nothing was), then the taking out itself.
    ("runs_redacted", "ALTER TABLE runs ADD COLUMN redacted JSON;"),
    ("redact_stored_secrets", redact_stored_secrets),
    # Which questions need the whole document (issue 30): each question's measured context need
    # and stratum, keyed by the corpus's content hash so every run of the same corpus reuses it
    # (source: spans, probe or label; context_need: chunks touched or the smallest top-k that
    # answered, NULL: correct at no k), with what measuring it cost; and the retrieval probe's own
    # requests, kind 'context_probe', kept apart from `predictions` so they never enter a comparison.
    ("context_need", """
    CREATE TABLE context_need (
        corpus_key VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        context_need DOUBLE,
        stratum VARCHAR NOT NULL,
        spread_chars DOUBLE,
        chunk_tokens INTEGER,
        ks JSON,
        requests INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        e2e_ms DOUBLE NOT NULL DEFAULT 0,
        model VARCHAR,
        measured_at TIMESTAMP NOT NULL,
        PRIMARY KEY (corpus_key, example_id, source)
    );
    CREATE TABLE context_probe_requests (
        corpus_key VARCHAR NOT NULL,
        example_id VARCHAR NOT NULL,
        k INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        params_hash VARCHAR NOT NULL,
        answer VARCHAR NOT NULL,
        correct DOUBLE,
        error VARCHAR,
        context_tokens INTEGER,
        prompt_tokens INTEGER,
        output_tokens INTEGER,
        e2e_ms DOUBLE,
        retrieval_ms DOUBLE,
        measured_at TIMESTAMP NOT NULL,
        PRIMARY KEY (corpus_key, example_id, k, params_hash)
    );
    """),
)
