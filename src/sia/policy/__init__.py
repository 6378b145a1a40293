"""The policy: the embedded model, local generation and scoring with adapters, batching, the OpenAI-compatible service.

May import errors, paths and values only.
"""
