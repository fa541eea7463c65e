"""Speed and scale measurements; each prints ratios against a baseline measured in the same run.

Run each as a module from the checkout (`python -m benchmarks.run`), so `benchmarks`, `compare`,
`pipelines` and `corpora` import as packages without a `sys.path` preamble in every script; the
offline defaults (no model hub) are set here, once, before any benchmark loads a model."""

from compare.core.offline import offline_defaults

offline_defaults()
