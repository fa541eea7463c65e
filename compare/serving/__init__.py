"""Talking to model servers: the HTTP client, managed vLLM servers, replicas, the pool,
the request schedule, model weights and CPU settings.
"""
