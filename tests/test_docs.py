"""CONTRIBUTING.md's module map is the notebooks as they are."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _default_exp(nb: Path) -> str | None:
    for c in json.loads(nb.read_text())["cells"]:
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(c["source"]), re.M)
        if m: return m.group(1)
    return None


def test_module_map_matches_the_notebooks():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    rows = re.findall(r"^\| `(\d\d[a-z]?_\w+)` \| `(\w+)` \|", text, re.M)
    nbs = {p.stem: _default_exp(p) for p in sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))}
    assert [n for n, _ in rows] == sorted(nbs), "CONTRIBUTING's module map lists other notebooks than `ls nbs`"
    assert dict(rows) == nbs, "a module in CONTRIBUTING's map is not its notebook's default_exp"
