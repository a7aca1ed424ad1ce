"""Shared fixtures: tiny models built in code, cached under ORPO_DEPLOY_CACHE (default ~/.cache/orpo-deploy)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir():
    from orpo_deploy.core.models import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def bundled_model_dir():
    from orpo_deploy.core.models import ensure_bundled_model

    return ensure_bundled_model()
