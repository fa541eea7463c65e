"""Public-domain books from the data directory, as clean text.

Project Gutenberg files carry a licence header and footer and use CRLF; War and Peace is
cp1252. Each book is read with its own encoding and trimmed to the work itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.M)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.M)


@dataclass(frozen=True)
class Book:
    file: str
    encoding: str
    title: str


BOOKS: dict[str, Book] = {
    "les_miserables": Book("books/les_miserables.txt", "utf-8-sig", "Les Misérables"),
    "war_and_peace": Book("books/war_and_peace.txt", "cp1252", "War and Peace"),
}


def data_dir(explicit: Path | str | None = None) -> Path:
    """--data-dir, else $RAGVSLC_DATA, else ../shared/data beside the checkout."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("RAGVSLC_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def strip_gutenberg(text: str) -> str:
    start = _START.search(text)
    end = _END.search(text)
    body = text[start.end() if start else 0 : end.start() if end else len(text)]
    return body.strip()


@lru_cache(maxsize=4)
def load_book(name: str, root: Path) -> str:
    """The book's text with Unix newlines, without the Gutenberg header and footer."""
    if name not in BOOKS:
        raise ValueError(f"unknown book {name!r}; known: {sorted(BOOKS)}")
    path = root / BOOKS[name].file
    if not path.is_file():
        raise FileNotFoundError(
            f"book file {path} not found; set --data-dir or RAGVSLC_DATA to the data directory"
        )
    raw = path.read_bytes().decode(BOOKS[name].encoding)
    return strip_gutenberg(raw.replace("\r\n", "\n"))


# A target length in tokens, or "full": the whole book as one document (run-spec fields).
TokenLength = Annotated[int, Field(ge=64, le=1_000_000)] | Literal["full"]
BookName = Literal["les_miserables", "war_and_peace"]
