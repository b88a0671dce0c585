"""Test session setup: offline hub, a private hub cache, no GUI backends, one torch thread."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# These are read when huggingface_hub / transformers are imported, so set them first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_CACHE", str(ROOT / ".cache" / "hub-test"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402


def has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def pytest_collection_modifyitems(config, items):
    skip_peer = pytest.mark.skip(reason="circuit-tracer is not installed (install the `peer` extra)")
    for item in items:
        if "peer" in item.keywords and not has_module("circuit_tracer"):
            item.add_marker(skip_peer)
