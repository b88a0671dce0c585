"""The package is exactly what `nbdev-export` makes of the notebooks."""
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nbdev_export_is_clean(tmp_path):
    for name in ("nbs", "llm_biology"): shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "README.md").write_text("")
    exe = Path(sys.executable).parent / "nbdev-export"
    subprocess.run([str(exe)], cwd=tmp_path, check=True, capture_output=True)
    stale = [p.name for p in sorted((ROOT / "llm_biology").glob("*.py"))
             if (tmp_path / "llm_biology" / p.name).read_text() != p.read_text()]
    missing = sorted({p.name for p in (tmp_path / "llm_biology").glob("*.py")} -
                     {p.name for p in (ROOT / "llm_biology").glob("*.py")})
    assert not stale and not missing, (
        f"llm_biology/ is out of sync with nbs/ (changed: {stale}, not exported: {missing}): "
        "run `nbdev-export` and commit the result.")
