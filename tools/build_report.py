#!/usr/bin/env python3
"""A static HTML report of the executed notebooks, built offline.

    python tools/build_report.py --executed notebooks/executed --out build/report [--sizes quick paper]

Reads <executed>/<size>/NN_name.ipynb and writes <out>/index.html and <out>/<size>/NN_name.html.
Notebook pages are nbconvert's lab template without its CDN scripts (require.js, MathJax, mermaid,
widgets), so they work with no network; figures stay inline as data URIs. Each page shows the size
and budget it was computed at, read from nb.metadata["fmrec"] (size, description, budget,
not_computed) when the suite wrote it, else the size folder's name and an empty list.
"""
import argparse
import re
import sys
from html import escape
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter

SIZE_ORDER = ["smoke", "quick", "paper"]
CSS = """
body { font-family: system-ui, sans-serif; line-height: 1.45; }
.report { max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }
.report-banner { max-width: 1100px; margin: 1em auto; padding: .6em 1em; border-left: 5px solid #d08a00;
  background: #fff6e0; font-family: system-ui, sans-serif; font-size: 15px; line-height: 1.45; }
.report-banner p, .report-banner ul { margin: .25em 0; }
.report-banner a, .report a { color: #0645ad; text-decoration: underline; }
.report table { border-collapse: collapse; width: 100%; }
.report th, .report td { border: 1px solid #ccc; padding: .4em .6em; text-align: left; vertical-align: top; }
.report th { background: #f0f0f0; }
.report ul { margin: 0; padding-left: 1.2em; }
.jp-RenderedImage img { max-width: min(100%, 900px); height: auto; }
"""
# nbconvert's lab page less every script it would load from a CDN, with a banner on top
TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js %}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block html_head_css %}<style>{{ resources.report_css }}</style>{% endblock html_head_css %}
{% block body_header %}{{ super() }}{{ resources.report_banner }}{% endblock body_header %}
"""
EXTERNAL = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", re.I)


def size_key(size):
    return (SIZE_ORDER.index(size) if size in SIZE_ORDER else len(SIZE_ORDER), size)


def title_of(nb, fallback):
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    return fallback


def info_of(nb, size):
    meta = nb.metadata.get("fmrec") or {}
    return {"size": meta.get("size") or size, "description": meta.get("description") or "",
            "budget": meta.get("budget") or "", "not_computed": [str(x) for x in meta.get("not_computed") or []]}


def size_line(info):
    text = f"<b>Computed at size {escape(info['size'])}</b>"
    text += f": {escape(info['description'])}" if info["description"] else ""
    budget = escape(info["budget"]) if info["budget"] else "not recorded in this notebook"
    return f"<p>{text}</p><p>Budget: {budget}</p>"


def bullets(items, fold=5):
    """A list; a long one folded behind its count."""
    if not items:
        return "&mdash;"
    listed = "<ul>" + "".join(f"<li>{escape(x)}</li>" for x in items) + "</ul>"
    return listed if len(items) <= fold else f"<details><summary>{len(items)} runs</summary>{listed}</details>"


def banner(info, stem, other_sizes):
    links = " ".join(f'<a href="../{s}/{stem}.html">{escape(s)}</a>' for s in other_sizes)
    return ('<div class="report-banner"><p><a href="../index.html">&larr; all notebooks</a>'
            + (f" &middot; also computed at: {links}" if links else "") + "</p>" + size_line(info)
            + (f"<p>Not measured yet:</p>{bullets(info['not_computed'])}" if info["not_computed"] else "")
            + "</div>")


def index_page(sizes, rows):
    size_notes = "".join(f'<div class="report-banner">{size_line(info)}</div>' for info in sizes.values())
    body = []
    for stem, per_size in rows:
        main = per_size[max(per_size, key=size_key)]
        computed = " ".join(f'<a href="{s}/{stem}.html">{escape(s)}</a>' for s in sorted(per_size, key=size_key))
        todo = {s: bullets(per_size[s]["info"]["not_computed"]) if s in per_size else "not rendered yet"
                for s in sorted(sizes, key=size_key)}
        if len(todo) == 1:
            missing = next(iter(todo.values()))
        else:
            missing = "".join(f"<div><b>{escape(s)}:</b> {text}</div>" for s, text in todo.items())
        body.append(f'<tr><td><a href="{main["href"]}">{escape(stem)}</a></td><td>{escape(main["title"])}</td>'
                    f"<td>{computed}</td><td>{missing}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>FMRec reproduced: executed notebooks</title><style>{CSS}</style></head>
<body><main class="report">
<h1>FMRec reproduced: the executed notebooks</h1>
<p>Static pages of the notebook suite as it ran: code, tables, figures and each notebook's
paper-against-measured caption. Every number was computed at the size named beside it, within that
size's budget below, so read it against that budget; the last column lists what is not measured yet.</p>
{size_notes}
<table><thead><tr><th>Notebook</th><th>What it reproduces</th><th>Computed at</th><th>Not measured yet</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
</main></body></html>
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executed", type=Path, default=Path("notebooks/executed"))
    ap.add_argument("--out", type=Path, default=Path("build/report"))
    ap.add_argument("--sizes", nargs="+", help="size folders to include (default: every one present)")
    args = ap.parse_args(argv)
    present = [d.name for d in args.executed.iterdir() if d.is_dir()] if args.executed.is_dir() else []
    sizes = sorted(args.sizes or present, key=size_key)
    found = {s: sorted((args.executed / s).glob("[0-9][0-9]_*.ipynb")) for s in sizes}
    if not any(found.values()):
        sys.exit(f"build_report: no executed notebook found: expected {args.executed}/<size>/NN_name.ipynb"
                 f" ({'sizes ' + ', '.join(sizes) if sizes else 'no size folder'}); run the suite first"
                 " (`make paper`, which writes notebooks/executed/<size>/)")
    for size in (s for s, paths in found.items() if not paths):
        print(f"build_report: no executed notebook for size {size}: skipped", file=sys.stderr)
    exporter = HTMLExporter(extra_loaders=[DictLoader({"report.html.j2": TEMPLATE})],
                            template_file="report.html.j2", embed_images=True)
    notebooks, size_info = {}, {}
    for size, paths in found.items():
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            info = info_of(nb, size)
            if size not in size_info or (info["budget"] and not size_info[size]["budget"]):
                size_info[size] = info
            notebooks.setdefault(path.stem, {})[size] = {"nb": nb, "path": path, "info": info,
                                                          "title": title_of(nb, path.stem),
                                                          "href": f"{size}/{path.stem}.html"}
    written = []
    for stem, per_size in notebooks.items():
        for size, entry in per_size.items():
            resources = {"metadata": {"name": f"{entry['title']} ({size})", "path": str(entry["path"].parent)},
                         "report_css": CSS, "report_banner": banner(entry["info"], stem, sorted(set(per_size) - {size}, key=size_key))}
            page, _ = exporter.from_notebook_node(entry["nb"], resources=resources)
            if EXTERNAL.search(page):
                print(f"build_report: warning: {entry['href']} still references an external script or"
                      f" stylesheet: {EXTERNAL.search(page).group(0)}", file=sys.stderr)
            written.append(write(args.out / entry["href"], page))
    written.insert(0, write(args.out / "index.html", index_page(size_info, sorted(notebooks.items()))))
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 1024:.1f} KiB)")
    print(f"{len(written)} pages; {args.out} holds {total / 1024 / 1024:.2f} MiB")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    main()
