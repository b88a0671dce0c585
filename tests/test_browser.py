"""The report website in a real browser.

A small run of every stage template that exists (tiny hub model, 2 prompts per behaviour) is rendered
with `render_site` (Quarto if installed, else nbconvert) and served on 127.0.0.1; headless Chromium
follows the navigation from the home page to every page and checks: no console or page errors, no
request to any other host, the key content of each report page, an attribution graph that plotly drew
with hoverable nodes, and typeset math. Screenshots go to a temporary folder (printed); with
LLMB_UPDATE_SCREENSHOTS=1 the landing page's also replaces `reports/screenshot.png` (the README's).

Needs chromium (`apt-get install -y chromium`) and playwright (the `dev` extra); skipped otherwise.
"""
import functools, http.server, importlib.util, os, shutil, threading, warnings
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
LIBRARY = ("index.ipynb", "00_core.ipynb", "09_report.ipynb")  # a few Library pages keep the test short

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright is not installed (pip install playwright; it is in the `dev` extra)"),
]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "A project with a few Library notebooks and one tiny run of every stage that has a template, rendered."
    from llm_biology.cli import STAGES, templates_dir, run_pipeline
    from llm_biology.core import LLMBiologyError, RunConfig, model_paths
    from llm_biology.report import render_site
    from llm_biology.testing import tiny_hub
    root = tmp_path_factory.mktemp("site")
    shutil.copy(ROOT / "_quarto.yml", root); shutil.copy(ROOT / "pyproject.toml", root)
    (root / "nbs").mkdir()
    for nb in LIBRARY: shutil.copy(ROOT / "nbs" / nb, root / "nbs" / nb)
    hub = tiny_hub()
    cfg = RunConfig(model=hub.model_id, transcoders=hub.transcoder_ids["jumprelu"], data_dir=str(root / "data"), n_prompts=2,
                    include_failed=True, n_control_draws=2, max_feature_nodes=64)  # the random tiny model fails every baseline
    done = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(hub.cache_dir))  # the papermill kernels inherit these
        mp.setenv("HF_HUB_OFFLINE", "1")
        for st in STAGES:  # whichever stages exist, in order, up to the first that fails
            if not (templates_dir() / st.template).exists(): break
            try: run_pipeline(cfg, st.name, log=lambda s: None)
            except LLMBiologyError as e:
                warnings.warn(f"stage {st.name} failed; the site shows the stages before it: {e}"); break
            done.append(st.name)
        res = render_site(root / "data", out=root / "_site", project=root, log=None)
    return {"root": root, "res": res, "stages": done, "slug": model_paths(cfg.model, cfg.data_dir).root.name,
            "shots": tmp_path_factory.mktemp("screenshots")}


@pytest.fixture(scope="module")
def server(site):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site["res"].out_dir)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # playwright gives it a fresh temporary profile
        yield b
        b.close()


def _open(browser, url, height=1000):
    "A page at `url` with its console errors, page errors, failed and non-local requests recorded."
    page = browser.new_page(viewport={"width": 1400, "height": height})
    log = {"errors": [], "foreign": [], "failed": []}
    page.on("console", lambda m: log["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["errors"].append(str(e)))
    page.on("requestfailed", lambda r: log["failed"].append(r.url))
    page.on("request", lambda r: log["foreign"].append(r.url) if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
            and urlparse(r.url).hostname != "127.0.0.1" else None)
    page.goto(url); page.wait_for_load_state("networkidle")
    return page, log


def _local_links(page, base):
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    return {h.split("#")[0] for h in hrefs if h.startswith(base) and h.split("#")[0].endswith(".html")}


def test_navigation_reaches_every_page_offline(site, server, browser):
    "From the home page, the navigation reaches every rendered page; none errs or asks another host for anything."
    res = site["res"]
    assert not res.warnings, res.warnings
    todo, seen, problems = [server + "index.html"], set(), {}
    while todo:
        url = todo.pop(0)
        if url in seen: continue
        seen.add(url)
        page, log = _open(browser, url)
        page.wait_for_timeout(300)
        rel = url[len(server):]
        page.screenshot(path=str(site["shots"] / (rel.replace("/", "__") + ".png")), full_page=True)
        bad = {k: v for k, v in log.items() if v}
        if bad: problems[rel] = bad
        todo += sorted(_local_links(page, server) - seen)
        page.close()
    rendered = {server + p.relative_to(res.out_dir).as_posix() for p in res.pages}
    assert rendered <= seen, f"pages the navigation never reaches: {sorted(rendered - seen)}"
    assert not problems, problems
    print(f"\n{len(seen)} pages, renderer {res.renderer}, stages {site['stages']}; screenshots in {site['shots']}")


def test_landing_page_content(site, server, browser):
    "The model's landing page: the baseline table, an interactive graph with hoverable nodes, the faithfulness figure."
    slug, stages = site["slug"], site["stages"]
    page, log = _open(browser, f"{server}reports/{slug}.html", height=1350)
    text = page.inner_text("main")
    assert f"Report: {slug}" in page.title()
    if "baseline" in stages:
        rows = page.eval_on_selector_all("main table", "ts => ts[0].innerText")
        assert "accuracy" in rows and "grammar_agreement" in rows and ("PASS" in rows or "FAIL" in rows), rows
    if "attribution" in stages:
        page.wait_for_selector(".llmb-graph[data-rendered=plotly] .scatterlayer", timeout=20000)
        graph = page.locator(".llmb-graph[data-rendered=plotly]").first
        points = graph.locator(".scatterlayer .trace .points path")
        assert points.count() > 0, "the graph has no drawn nodes"
        page.evaluate("""() => {  // hover the first feature node, as a mouse over it does
            const plot = document.querySelector('.llmb-graph[data-rendered=plotly] .llmb-plot');
            Plotly.Fx.hover(plot, [{curveNumber: plot.data.findIndex(t => t.name === 'feature'), pointNumber: 0}]);
        }""")
        page.wait_for_selector(".hoverlayer .hovertext", timeout=5000)
        hover = page.text_content(".hoverlayer")  # SVG text: inner_text works on HTML elements only
        for field in ("layer:", "feature:", "activation:", "effect:"): assert field in hover, hover
        assert "Circuit, class" in text
    if "interventions" in stages:
        assert page.locator('.llmb-graph[data-figure^="faithfulness"][data-rendered=plotly]').count() > 0, "no faithfulness figure"
        assert "Faithfulness" in text
    assert not any(log.values()), log
    shot = site["shots"] / "landing.png"
    page.screenshot(path=str(shot))
    if os.environ.get("LLMB_UPDATE_SCREENSHOTS"): shutil.copy(shot, ROOT / "reports" / "screenshot.png")
    page.close()


def test_comparison_and_math(site, server, browser):
    "The comparison page lists the model and draws its charts; math is typeset by the local MathJax (nbconvert)."
    page, log = _open(browser, f"{server}reports/comparison.html")
    assert site["slug"] in page.inner_text("main")
    if "baseline" in site["stages"]:
        page.wait_for_selector('.llmb-graph[data-figure="baseline accuracy"][data-rendered=plotly]', timeout=20000)
    assert not any(log.values()), log
    page.close()
    # the landing page writes the faithfulness ratio as math; the baseline notebook has its formula
    with_math = [f"reports/{site['slug']}.html"] * ("interventions" in site["stages"]) + \
                [f"data/{site['slug']}/notebooks/02_baseline.html"] * ("baseline" in site["stages"])
    if site["res"].renderer == "nbconvert" and with_math:
        page, log = _open(browser, server + with_math[0])
        page.wait_for_selector("mjx-container svg", state="attached", timeout=20000)
        assert not any(log.values()), log
        page.close()
