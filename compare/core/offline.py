"""No network at run time: the Hugging Face libraries are told to stay offline (models come from
pip packages or local folders), set when a command or `api.run` starts, never at import.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # models come from pip packages or local folders, never the hub
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # weight-loading bars drown the run's own output
}


def offline_defaults() -> None:
    """Set the offline defaults unless the caller set them (called by `run` and the CLI)."""
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
