"""Serving stage: an OpenAI-style HTTP server on vLLM's async engine (``orpo-serve``)."""
