"""Load tests: Locust against any OpenAI-compatible server, SLO gates, summaries and plots (see README.md)."""
