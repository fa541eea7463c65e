"""Importing the program changes nothing (issue 16): no environment variable, no signal handler.

Run in a fresh interpreter (this test process has conftest's settings already), with the
variables the CLI sets removed from its environment first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, signal
before = dict(os.environ)
handler = signal.getsignal(signal.SIGTERM)
import main, compare.api, compare.run.execute, cli.results
changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
assert not changed, changed
assert signal.getsignal(signal.SIGTERM) is handler, "SIGTERM handler installed at import"
from compare.core.offline import offline_defaults
offline_defaults()
assert os.environ["HF_HUB_OFFLINE"] == "1"
print("ok")
"""


def test_importing_main_and_the_api_changes_nothing() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
                        "HF_HUB_DISABLE_PROGRESS_BARS")}
    got = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0 and got.stdout.strip() == "ok", got.stderr[-2000:]
