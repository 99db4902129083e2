"""The static report (tools/build_report.py), built from executed notebooks and opened in headless
Chromium: no blank page, every image loads, every relative link points to a file, nothing is fetched
from the network, and each page shows the size it was computed at.

Source: FMREC_REPORT_SOURCE (a folder holding <size>/*.ipynb), else notebooks/executed/quick.
Browser: Debian's chromium (CHROMIUM, default /usr/bin/chromium) driven by Playwright, which
downloads no browser of its own here. Without them the test skips, saying why; in CI it fails.
Screenshots land in the test's tmp folder (printed; `pytest -s tests/test_report.py` shows them)."""
import base64
import importlib.util
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PAGE_FACTS = """() => ({
  text: document.body.innerText.trim().length  // the text beside the size banners
    - [...document.querySelectorAll('.report-banner')].reduce((n, b) => n + b.innerText.trim().length, 0),
  height: document.body.scrollHeight,
  broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 100)),
  images: document.images.length,
  hrefs: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  banner: (document.querySelector('.report-banner') || {innerText: ''}).innerText,
  rows: document.querySelectorAll('table tbody tr').length,
})"""


def _build_report():
    spec = importlib.util.spec_from_file_location("build_report", REPO / "tools" / "build_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_report_offline_deterministic_with_and_without_metadata(tmp_path, capsys):
    import nbformat

    build = _build_report()
    with pytest.raises(SystemExit, match="no executed notebook found"):
        build.main(["--executed", str(tmp_path / "nothing"), "--out", str(tmp_path / "none")])
    png = base64.b64encode(zlib.compress(b"x")).decode()  # any bytes: only the markup is checked here
    for size, meta in [("quick", {"size": "quick", "description": "tiny", "budget": "3 % of the paper budget",
                                  "not_computed": ["Steam <absent>"]}), ("paper", None)]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Trajectories: straight\n\ntext"),
                                             nbformat.v4.new_code_cell("plot()")])
        nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]
        if meta:
            nb.metadata["fmrec"] = meta
        (tmp_path / "in" / size).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "in" / size / "02_trajectory.ipynb")
    pages = []
    for out in ("a", "b"):
        build.main(["--executed", str(tmp_path / "in"), "--out", str(tmp_path / out)])
        pages.append({p.relative_to(tmp_path / out): p.read_bytes() for p in (tmp_path / out).rglob("*.html")})
    assert pages[0] == pages[1]  # the same inputs give the same bytes
    assert set(pages[0]) == {Path("index.html"), Path("quick/02_trajectory.html"), Path("paper/02_trajectory.html")}
    assert "3 pages;" in capsys.readouterr().out
    quick, paper, index = (pages[0][Path(p)].decode() for p in ("quick/02_trajectory.html",
                                                                 "paper/02_trajectory.html", "index.html"))
    for page in (quick, paper, index):
        assert not re.search(r"<(script|link)\b[^>]*(src|href)=[\"']?(https?:)?//", page)
    assert "Computed at size quick</b>: tiny" in quick and "Budget: 3 % of the paper budget" in quick
    assert "Steam &lt;absent&gt;" in quick and "Steam &lt;absent&gt;" in index
    assert f"data:image/png;base64,{png}" in quick
    assert "Computed at size paper</b>" in paper and "not recorded in this notebook" in paper  # no metadata
    assert "Trajectories: straight" in index and 'href="quick/02_trajectory.html"' in index


def _missing(what):
    if os.environ.get("CI"):
        pytest.fail(what + " -- CI must have it (.ci/run installs chromium)")
    pytest.skip(what)


def _source():
    if os.environ.get("FMREC_REPORT_SOURCE"):
        return Path(os.environ["FMREC_REPORT_SOURCE"]), None
    if not list((REPO / "notebooks" / "executed" / "quick").glob("*.ipynb")):
        pytest.skip("no executed notebooks in notebooks/executed/quick (set FMREC_REPORT_SOURCE to a folder "
                    "holding <size>/*.ipynb)")
    # the committed sizes (smoke's executed copies are local, git-ignored)
    return REPO / "notebooks" / "executed", [s for s in ("quick", "paper")
                                             if list((REPO / "notebooks" / "executed" / s).glob("*.ipynb"))]


def _broken_links(page_file, hrefs):
    broken = []
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path:  # external, data:, mailto: or #anchor
            continue
        if not (page_file.parent / unquote(parts.path)).is_file():
            broken.append(href)
    return broken


def test_report_pages_render_in_headless_chromium(tmp_path):
    source, sizes = _source()
    if not Path(CHROMIUM).is_file():
        _missing(f"headless Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")

    out = tmp_path / "report"
    cmd = [sys.executable, str(REPO / "tools" / "build_report.py"), "--executed", str(source), "--out", str(out)]
    built = subprocess.run(cmd + (["--sizes", *sizes] if sizes else []), capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    pages = sorted(out.glob("*/*.html"))
    assert pages, built.stdout
    # the screenshot of one notebook page: the one with the most figures
    shown = max(pages, key=lambda p: p.read_text(encoding="utf-8").count("<img"))

    start, external, problems = time.time(), [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        browser.route(re.compile(r"^https?://"), lambda route: (external.append(route.request.url), route.abort()))
        try:
            page = browser.new_page()
            for page_file in [out / "index.html", *pages]:
                page.goto(page_file.as_uri(), wait_until="load")
                facts = page.evaluate(PAGE_FACTS)
                name = page_file.relative_to(out)
                if facts["text"] < 200 or facts["height"] < 300:
                    problems.append(f"{name}: blank page ({facts['text']} characters, {facts['height']} px)")
                problems += [f"{name}: image did not load: {src}" for src in facts["broken"]]
                problems += [f"{name}: link to a missing file: {h}" for h in _broken_links(page_file, facts["hrefs"])]
                if "size" not in facts["banner"] or "Budget" not in facts["banner"]:
                    problems.append(f"{name}: no size/budget banner (got {facts['banner'][:80]!r})")
                notebooks = len({p.stem for p in pages})
                if page_file.name == "index.html" and facts["rows"] != notebooks:
                    problems.append(f"index.html: {facts['rows']} table rows for {notebooks} notebooks")
                if page_file in (out / "index.html", shown):
                    shot = tmp_path / f"{page_file.parent.name}_{page_file.stem}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot: {shot} ({facts['images']} images, {facts['height']} px tall)")
        finally:
            browser.close()
    print(f"{len(pages) + 1} pages checked in Chromium in {time.time() - start:.1f} s")
    problems += [f"fetched from the network: {url}" for url in external]
    assert not problems, "\n".join(problems)
