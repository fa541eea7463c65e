"""The lowest layer: value types, protocols, registries, quality metrics, strict config.

It imports nothing else of ragvslc; pipelines and corpora import only this layer.
"""
