"""FAISS index kinds: exact inner product (default), HNSW and IVF for large corpora.

Vectors are unit length, so inner product is cosine similarity in every kind. Exact search is
the default because a per-document index holds tens to thousands of chunks, where brute force
takes microseconds and loses no recall; the approximate kinds exist for whole-corpus indexes of
millions of chunks, and their parameters are recorded so a recall loss can be traced to them.

- flat: `IndexFlatIP`, exhaustive;
- hnsw: `IndexHNSWFlat` (M links per node, efConstruction at build, efSearch at query);
- ivf: `IndexIVFFlat` over `nlist` k-means lists, `nprobe` lists scanned per query. nlist is
  chosen from the number of chunks n unless given: about sqrt(n) (the usual balance between
  scanning centroids and scanning lists), capped at n // 39 because FAISS's k-means wants at
  least 39 training points per centroid, and at least 1 (a single list is exhaustive search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
from numpy.typing import NDArray

IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[IndexKind, ...] = ("flat", "hnsw", "ivf")
MIN_POINTS_PER_LIST = 39  # below this FAISS's k-means warns that centroids are poorly trained


def auto_nlist(n: int) -> int:
    """IVF list count for n vectors: ~sqrt(n), at most n // 39, at least 1."""
    return max(1, min(round(math.sqrt(n)), n // MIN_POINTS_PER_LIST))


@dataclass(frozen=True)
class IndexConfig:
    """Which FAISS structure to build and how to search it; unused fields are ignored."""

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 64
    ivf_nlist: int | None = None  # None: auto_nlist(n_chunks), decided per index
    ivf_nprobe: int = 8

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, got {self.kind!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ivf_nlist is not None and self.ivf_nlist < 1:
            raise ValueError(f"ivf_nlist must be >= 1 or None (auto), got {self.ivf_nlist}")

    def params(self) -> dict[str, object]:
        """The knobs that matter for this kind, for a pipeline's params (and its hash)."""
        if self.kind == "hnsw":
            return {"m": self.hnsw_m, "ef_construction": self.hnsw_ef_construction,
                    "ef_search": self.hnsw_ef_search}
        if self.kind == "ivf":
            return {"nlist": self.ivf_nlist if self.ivf_nlist is not None else "auto",
                    "nprobe": self.ivf_nprobe}
        return {}

    def nlist_for(self, n: int) -> int:
        """k-means needs at least one point per list: an explicit nlist is capped at n."""
        return max(1, min(self.ivf_nlist, n)) if self.ivf_nlist is not None else auto_nlist(n)

    def file_id(self, n: int) -> str:
        """Names a stored index by its build-time parameters (search-time ones are not stored)."""
        if n == 0 or self.kind == "flat":
            return "flat"
        if self.kind == "hnsw":
            return f"hnsw-m{self.hnsw_m}-efc{self.hnsw_ef_construction}"
        return f"ivf-nlist{self.nlist_for(n)}"

    def search_params(self, built: dict[str, Any]) -> dict[str, object]:
        """Search-time parameters as they apply to an index built with `built` parameters."""
        if built.get("kind") == "hnsw":
            return {"ef_search": self.hnsw_ef_search}
        if built.get("kind") == "ivf":
            return {"nprobe": min(self.ivf_nprobe, int(built["nlist"]))}
        return {}


def make_faiss(vecs: NDArray[np.float32], config: IndexConfig) -> tuple[Any, dict[str, Any]]:
    """Build the configured index over `vecs`; returns it with the build parameters used.

    An empty input always gets a flat index: there is nothing to train IVF on.
    """
    n, dim = vecs.shape
    x = np.ascontiguousarray(vecs, dtype=np.float32)
    if n == 0 or config.kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
        built: dict[str, Any] = {"kind": "flat"}
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        built = {"kind": "hnsw", "m": config.hnsw_m, "ef_construction": config.hnsw_ef_construction}
    else:
        nlist = config.nlist_for(n)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234  # fixed k-means seed: the same chunks give the same lists
        if nlist == 1:  # one list is the mean of all points: FAISS's "too few points" is moot
            index.cp.min_points_per_centroid = 1
        index.train(x)
        built = {"kind": "ivf", "nlist": nlist, "nlist_auto": config.ivf_nlist is None}
    if n:
        index.add(x)
    tune(index, config)
    return index, built


def tune(index: Any, config: IndexConfig) -> None:
    """Apply search-time parameters (they are not part of a stored index's identity)."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = config.hnsw_ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(config.ivf_nprobe, index.nlist)
