"""report.html: the whole verdict in one self-contained page, to send to someone without the
run directory or a Python environment (an e-mail attachment opens it).

The verdict in sentences first, then the leaderboard with every column and what backs it, the
families, the per-class tables, every PNG of plots/ (inline, base64) and the provenance
(env.json, config.toml). Inline CSS and a few lines of plain JavaScript (sortable tables);
nothing is fetched when the page opens. The numbers are the leaderboard's; this module only
renders them. Returns text: runner/report/finalize.py and `compare report` write it.
"""
from __future__ import annotations

import base64
import html
import json
import re
import shlex
from collections.abc import Callable

import pandas as pd

from compare.errors import one_line
from compare.report import formats
from compare.report.across import Across
from compare.report.families import FamilyBoard
from compare.report.leaderboard import Leaderboard
from compare.report.run_data import RunData
from compare.report.sentences import sentences
from compare.rundir import layout

PLOT_ORDER = [layout.LEADERBOARD_PNG, layout.LEARNING_CURVES_PNG, layout.PARETO_PARAMS_PNG, layout.PARETO_TRAIN_TIME_PNG,
              layout.TUNING_CURVES_PNG, layout.CONFUSION_PNG, layout.PER_CLASS_PNG, layout.CONFUSED_PAIRS_PNG,
              layout.CALIBRATION_PNG, layout.REGRESSION_PNG, layout.GRAD_NORMS_PNG]  # the verdict's plots first; others after, by name
PROVENANCE = ["started_utc", "python", "torch", "torchvision", "pandas", "cuda", "device", "device_name", "platform",
              "torch_threads", "world_size", "place", "git_commit"]

CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fff; --muted: #666; --line: #ddd; --head: #f4f4f6; --accent: #2762c4; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8ea; --bg: #17181b; --muted: #a0a0a8; --line: #3a3b40; --head: #222328; --accent: #7aa7ff; } }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1200px; padding: 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 0.2em; margin-top: 2em; }
.verdict { font-size: 1.15em; border-left: 4px solid var(--accent); padding: 0.3em 1em; margin: 1em 0; }
.verdict p { margin: 0.3em 0; } .muted, figcaption { color: var(--muted); font-size: 0.9em; }
.scroll { overflow-x: auto; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.85em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 0.25em 0.6em; text-align: left; white-space: nowrap; } .num { text-align: right; }
th { background: var(--head); position: sticky; top: 0; } table.sortable th { cursor: pointer; }
figure { margin: 1.5em 0; } img { max-width: 100%; height: auto; background: #fff; border: 1px solid var(--line); }
pre { background: var(--head); padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { font-size: 0.92em; } details { margin: 0.8em 0; } summary { cursor: pointer; color: var(--accent); }
"""

# Click a header to sort by it (numbers as numbers; "-" and text after them); click again to reverse.
SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.title = "click to sort";
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], i = th.cellIndex, up = th.dataset.dir !== "asc";
    th.dataset.dir = up ? "asc" : "desc";
    var key = function (tr) { var t = tr.cells[i].textContent.trim(), n = parseFloat(t.replace(/^[<>]/, "").replace(/,/g, "")); return isNaN(n) ? [1, t] : [0, n]; };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return up ? c : -c;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def page(runs: list[RunData], board: Leaderboard | Across, by_family: FamilyBoard | None = None, notes: list[str] | None = None) -> str:
    """The report of one run (or several, merged as `compare leaderboard` merges them)."""
    one = len(runs) == 1
    name = (runs[0].config.get("experiment", {}).get("name") or runs[0].label) if one else f"{len(runs)} runs"
    across = isinstance(board, Across)
    verdict = [f"Across datasets: {board.verdict}."] if across else sentences(board)
    parts = [f"<h1>{_e(name)}: report</h1>",
             f"<p class=muted>{_e(_subtitle(runs, board))}</p>",
             '<section class=verdict id=verdict>' + "".join(f"<p>{_e(s)}</p>" for s in verdict) + "</section>"]
    parts += _section("Leaderboard", lambda: _leaderboard(board))
    if by_family is not None:
        parts += _section("Families", lambda: _families(by_family))
    if one and not across:
        parts += _section("Per class", lambda: _per_class(runs[0], list(board.table["model"])))
    parts += _section("Plots", lambda: _plots(runs))
    parts += _section("Provenance", lambda: _provenance(runs))
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(name)}: report</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n<script>{SORT_JS}</script>\n</body>\n</html>\n")


def _subtitle(runs: list[RunData], board) -> str:
    metric = board.metric if isinstance(board, Across) else board.evidence.metric
    seeds = sorted({s for r in runs for s in r.seeds})
    paths = ", ".join(str(r.path) for r in runs)
    return f"compare report of {paths}: ranked by {metric}; {len(seeds)} seed(s)"


def _section(title: str, build: Callable[[], list[str]]) -> list[str]:
    """A heading and its content; a section that cannot be made says why instead (as a plot that
    fails is a note): the rest of the report, and the run, still stand."""
    try:
        content = build()
    except Exception as err:  # noqa: BLE001 - one section's trouble must not cost the others (or the run)
        content = [f"<p class=muted>not shown: {_e(one_line(err))}</p>"]
    return [f"<h2 id={_slug(title)}>{_e(title)}</h2>", *content] if content else []


def _leaderboard(board) -> list[str]:
    if isinstance(board, Across):
        return [_table(formats.across_display(board)), _bullets(formats.across_evidence(board))]
    parts = [_table(formats.display(board)), "<h3>What backs each claim</h3>", _bullets(formats.evidence_lines(board))]
    per_seed = board.evidence.per_seed
    if per_seed is not None and len(per_seed):
        parts += [f"<h3>Per seed: exact McNemar against {_e(board.evidence.reference)}</h3>",
                  "<p class=muted>Uncorrected, one seed at a time; the table above combines the seeds per test sample.</p>", _table(per_seed)]
    parts.append(_details("Every column (leaderboard.csv)", _table(board.table)))
    return parts


def _families(by_family: FamilyBoard) -> list[str]:
    return [_bullets([f"- {line}" for line in by_family.lines]), _table(formats.family_display(by_family)),
            _details("Tuning curves (tuning_curves.csv)", _table(by_family.curves))]


def _per_class(run: RunData, order: list[str]) -> list[str]:
    from compare.report.per_class import confused_pairs, per_class  # noqa: PLC0415 - sklearn, on demand

    table = per_class(run, order)
    if table.empty:
        return []
    what = "per class" if "class" in table else "per label" if "label" in table else "per output"
    parts = [_details(f"Every model {what} (test, the reported epoch): {len(table)} rows", _table(table))]
    pairs = confused_pairs(run, order)
    if not pairs.empty:
        parts.append(_details("Most-confused pairs (true -> predicted; count per seed, share of the true class)", _table(pairs)))
    return parts


def _plots(runs: list[RunData]) -> list[str]:
    parts = []
    for run in runs:
        folder = run.path / layout.PLOTS
        files = sorted(folder.glob("*.png"), key=lambda p: (PLOT_ORDER.index(p.name) if p.name in PLOT_ORDER else len(PLOT_ORDER), p.name)) if folder.is_dir() else []
        if len(runs) > 1:
            parts.append(f"<h3>{_e(run.label)}</h3>")
        if not files:
            parts.append(f"<p class=muted>{_e(str(folder))} holds no plots (the run was made with --no-plots?): `compare plot {_e(str(run.path))}` draws them, then `compare report` again.</p>")
        for png in files:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{_e(png.name)}" src="data:image/png;base64,{data}"><figcaption>{_e(png.name)}</figcaption></figure>')
    return parts


def _provenance(runs: list[RunData]) -> list[str]:
    parts = []
    for run in runs:
        env = run.env
        if len(runs) > 1:
            parts.append(f"<h3>{_e(run.label)}</h3>")
        command = env.get("command")
        rows = [("run directory", str(run.path))] + ([("command", shlex.join(command) if isinstance(command, list) else str(command))] if command else [])
        rows += [(key, str(env[key])) for key in PROVENANCE if env.get(key) not in (None, "")]
        parts.append(_table(pd.DataFrame(rows, columns=["fact", "value"]), sortable=False))
        config = run.path / layout.CONFIG
        if config.is_file():
            parts.append(_details(f"{layout.CONFIG} (the resolved config)", f"<pre>{_e(config.read_text(errors='replace'))}</pre>"))
        parts.append(_details(f"{layout.ENV} (versions, machine, splits)", f"<pre>{_e(json.dumps(env, indent=2, default=str))}</pre>"))
    return parts


def _table(frame: pd.DataFrame, sortable: bool = True) -> str:
    """A DataFrame as an escaped HTML table: floats to 4 significant digits, missing as "-",
    columns of numbers right-aligned."""
    cells = [[_cell(v) for v in frame[c]] for c in frame.columns]
    numeric = [all(NUMBER.match(v) or v == "-" for v in column) for column in cells]
    head = "".join(f"<th{' class=num' if n else ''}>{_e(c)}</th>" for c, n in zip(frame.columns, numeric))
    rows = "".join("<tr>" + "".join(f"<td{' class=num' if n else ''}>{_e(v)}</td>" for v, n in zip(row, numeric)) + "</tr>" for row in zip(*cells))
    return f"<div class=scroll><table{' class=sortable' if sortable else ''}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


NUMBER = re.compile(r"^[<>\[]?[-+]?(\d|\.\d|inf|nan)")  # a cell that starts as a number: 0.98 ± 0.01, <0.001, [0.96, 0.99], 1.34M, 8 (final)


def _cell(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _bullets(lines: list[str]) -> str:
    """formats' Markdown bullets ("- **Protocol:** ... `test_acc` ...") as an HTML list."""
    items = []
    for line in lines:
        text = _e(line.removeprefix("- "))
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        items.append("<li>" + re.sub(r"`(.+?)`", r"<code>\1</code>", text) + "</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _details(summary: str, content: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>{content}</details>"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _e(text) -> str:
    return html.escape(str(text), quote=True)
