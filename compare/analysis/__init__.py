"""What the stored rows mean: summaries, cost, prices, the oracle router, workloads and
recommendations. Reads the store; never calls a model.
"""
