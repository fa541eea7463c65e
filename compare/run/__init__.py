"""The composition root: a run spec becomes a server, a corpus and pipelines, and is run,
rescored or judged; the only layer that imports pipelines and corpora.
"""
