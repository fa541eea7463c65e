"""The demo: what `make demo` measures, sized to finish in minutes on a 2-core CPU.

Two runs on one managed server, both pipelines on the same questions:
- a needle grid (2k and 4k tokens x depths 10/50/90 %): quality and latency against length;
- three questions on one real document (L-Eval tpo, ~4k tokens, multiple choice): the first
  question pays the document's cold prefill, the next two find it in the prefix cache, so the
  report has measured warm requests and a break-even drawn from them instead of derived ones.
The 8k cells of earlier demos are left out: on a CPU without native bf16 one cold 8k prompt
alone takes ~3 minutes (fp32, both cores), and the grid shows the length trend without it.
"""

from __future__ import annotations

from typing import Literal

from compare.run.spec import LevalCorpusSpec, NeedleCorpusSpec, RunSpec

DEMO_LENGTHS: list[int | Literal["full"]] = [2000, 4000]
DEMO_DEPTHS = [0.1, 0.5, 0.9]


def demo_specs() -> list[RunSpec]:
    return [
        RunSpec(corpus=NeedleCorpusSpec(lengths=DEMO_LENGTHS, depths=DEMO_DEPTHS)),
        RunSpec(corpus=LevalCorpusSpec(subset="tpo", max_docs=1, max_questions_per_doc=3)),
    ]


def describe() -> str:
    return ("demo: two runs on one server, long context vs RAG on the same questions: a needle grid "
            f"({'/'.join(f'{n}' for n in DEMO_LENGTHS)} tokens x depths "
            f"{'/'.join(f'{round(d * 100)}%' for d in DEMO_DEPTHS)}) and 3 questions on one real "
            "document (L-Eval tpo; questions 2-3 reuse its prefix cache)")
