"""The committed demo run (data/demo/) is portable and every file in it passes its strict reader."""
import json
import re
from pathlib import Path

import pytest

from llm_biology.figures import load_run

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
TEXT = {".json", ".jsonl", ".csv", ".ipynb", ".graphml", ".md", ".txt", ".yaml"}
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:home|tmp|work|root|Users|usr|opt|var|mnt|private)/")

pytestmark = pytest.mark.skipif(not (DEMO / "run.json").exists(), reason="no committed demo run")


def _text(p: Path) -> str:
    """The file's text; for notebooks without embedded images (base64 can spell anything)."""
    if p.suffix != ".ipynb": return p.read_text()
    nb = json.loads(p.read_text())
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            o.get("data", {}).pop("image/png", None)
    return json.dumps(nb)


def test_demo_results_hold_no_machine_path():
    files = [p for p in DEMO.rglob("*") if p.suffix in TEXT]
    assert len(files) > 50, f"only {len(files)} text files under {DEMO}"
    bad = []
    for p in files:
        t = _text(p)
        for needle in (str(ROOT), "site-packages"):
            if needle in t: bad.append(f"{p.relative_to(ROOT)}: {needle}")
        m = ABSOLUTE.search(t)
        if m: bad.append(f"{p.relative_to(ROOT)}: ...{t[max(0, m.start() - 30):m.end() + 30]}...")
    assert not bad, "\n".join(bad[:20])


def test_demo_results_pass_the_strict_readers():
    run = load_run(DEMO)
    assert run.slug == "demo"
    assert set(run.baseline) == {"grammar_agreement", "factual_recall", "sentiment_continuation", "arithmetic"}
    assert run.graphs and run.faithfulness, "the demo run lacks attribution graphs or faithfulness summaries"
    assert set(run.record["stages"]) == {"prompts", "baseline", "features", "attribution", "interventions"}
    assert set(run.catalogs) == set(run.graphs), "every analysed behaviour has a feature catalog"
    for b, cat in run.catalogs.items():
        top = cat["features"][:10]
        assert len(top) == 10, f"{b}: {len(top)} catalogued features"
        for c in top:
            assert c["label"] and c["logit_effects"]["top"] and c["logit_effects"]["bottom"], f"{b} {c['id']}"
            assert len(c["examples"]) >= 5, f"{b} {c['id']}: {len(c['examples'])} examples"
        assert cat["supernodes"], f"{b}: no supernodes"


def test_demo_faithfulness_rows_are_read_as_defined():
    """Every per-k row has its excess drop; a ratio appears only over a control that surely lowers the answer."""
    run = load_run(DEMO)
    for b, f in run.faithfulness.items():
        for r in f["per_k"]:
            where = f"{b} {r['class']} k={r['k']}"
            assert abs(r["excess_matched"] - (r["mean_drop_top"] - r["mean_drop_matched"])) < 1e-6, where
            lo, hi = r["ci_excess_matched"]
            assert lo <= r["excess_matched"] <= hi, where
            if r["ratio_matched"] is None: assert r["ratio_matched_note"], where
            else: assert r["ratio_matched"] > 0 and r["ci_matched"][0] > 0, where
