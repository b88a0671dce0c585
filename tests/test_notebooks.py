"""Run every notebook's tests (nbdev's runner), one pytest item per notebook.

Cells flagged `slow` run only with LLMB_TEST_FLAGS=slow; `peer` cells run when circuit-tracer is
installed; `gpu` cells when CUDA is available.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))


def _flags():
    import importlib.util
    import torch
    force = set(os.environ.get("LLMB_TEST_FLAGS", "").replace(",", " ").split())
    if importlib.util.find_spec("circuit_tracer"): force.add("peer")
    if torch.cuda.is_available(): force.add("gpu")
    skip = {"notest", "slow", "gpu", "peer"} - force
    return sorted(skip), sorted(force)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb):
    from nbdev import test as nbdev_test  # not imported by name: pytest would collect `test_nb`
    skip, force = _flags()
    ok, secs = nbdev_test.test_nb(nb, skip_flags=skip, force_flags=force, basepath=ROOT)
    assert ok, f"{nb.name} failed (its traceback is printed above)"
