"""report.html: the whole verdict in one self-contained file (runner/report/html.py), written at
the end of every run and by `compare report RUN [RUN ...]`; the verdict in sentences
(runner/report/sentences.py), also printed under the terminal leaderboard. The browser test
opens the file alone, away from its run directory, in headless Chromium with no network."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from compare.report.leaderboard import build
from compare.report.run_data import load_run
from compare.report.sentences import sentences
from compare.rundir import layout
from tests.helpers import cli

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
MODELS = ["fast", "slow", "stuck"]  # conftest.seeded_run: 3 seeds; stuck (lr = 0) cannot learn


class References(HTMLParser):
    """Every reference a browser would load or follow: an attribute that names a URL (not an
    inline data: URI nor a #fragment), a url() or @import in a style, an external script."""

    def __init__(self, page: str):
        super().__init__()
        self.found, self.style = [], False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "srcset", "data", "background") and not (value or "").startswith(("data:", "#")):
                self.found.append(f"<{tag} {name}={value}>")

    def handle_data(self, data):
        if self.style and re.search(r"url\(|@import", data):
            self.found.append(data[:80])


def fetched(page: str) -> list[str]:
    return References(page).found


def test_a_run_writes_one_self_contained_report(seeded_run):
    page = (seeded_run / layout.REPORT_HTML).read_text()
    board = build([load_run(seeded_run)])
    said = sentences(board)
    best = board.table.iloc[0]
    assert said[0] == f"{best['model']} is best on test_acc, {best['test_acc_mean']:.3f} [{best['test_acc_ci95_low']:.3f}, {best['test_acc_ci95_high']:.3f}]."
    assert any("stuck" in s and "worse (p < 0.001)" in s for s in said[1:]), said
    verdict = page.index("<section class=verdict")
    assert page.index(said[0].replace("<", "&lt;")) > verdict  # the verdict first: before the leaderboard
    assert verdict < page.index("<h2 id=leaderboard>") < page.index("<h2 id=plots>") < page.index("<h2 id=provenance>")
    for model in MODELS:
        assert re.search(rf"<tr><td class=num>\d</td><td>{model}</td>", page), f"no leaderboard row for {model}"
    assert fetched(page) == []  # nothing fetched: it opens from an e-mail attachment
    pngs = sorted((seeded_run / layout.PLOTS).glob("*.png"))
    assert len(pngs) >= 5
    for png in pngs:  # every plot, embedded byte for byte
        assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in page, png.name
    env = load_run(seeded_run).env
    for fact in (env["git_commit"], env["torch"], "experiment", "p_vs_best", "Per class", "config.toml"):
        assert str(fact) in page  # provenance, every leaderboard column, per-class tables


def test_the_terminal_prints_the_verdict_in_sentences(seeded_run):
    result = cli("leaderboard", seeded_run)
    assert result.exit_code == 0, result.output
    for line in sentences(build([load_run(seeded_run)])):
        assert line in result.output


def test_compare_report_writes_the_run_s_report_and_several_runs_need_out(two_model_run_copy, two_model_run, tmp_path):
    report = two_model_run_copy / layout.REPORT_HTML
    report.unlink()  # as a run made before report.html existed
    result = cli("report", two_model_run_copy)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(report)
    page = report.read_text()
    assert "holds no plots" in page and "compare plot" in page  # a run made with --no-plots says how to get them
    assert fetched(page) == []

    several = cli("report", two_model_run, two_model_run_copy)
    assert several.exit_code == 2 and "give --out FILE.html" in several.output
    missing = cli("report", two_model_run, two_model_run_copy, "--out", tmp_path / "nowhere" / "r.html")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "folder.html").mkdir()
    in_the_way = cli("report", two_model_run_copy, "--out", tmp_path / "folder.html")
    assert in_the_way.exit_code == 2 and f"cannot write {tmp_path / 'folder.html'}" in in_the_way.output
    out = tmp_path / "both.html"
    both = cli("report", two_model_run, two_model_run_copy, "--out", out)
    assert both.exit_code == 0, both.output
    table = out.read_text().split("<h2 id=leaderboard>")[1].split("</table>")[0]  # the leaderboard's first table
    rows = re.findall(r"<tr><td class=num>(\d)</td><td>([^<]+)</td><td>([ab])</td>", table)
    assert sorted(rank for rank, _, _ in rows) == ["1", "2", "3", "4"]  # both runs' models, in one table
    assert len({run for _, run, _ in rows}) == 2 and {model for _, _, model in rows} == {"a", "b"}


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="browser tier: no chromium here (apt-get install chromium)")
def test_the_report_renders_alone_in_chromium_with_no_console_error(seeded_run, tmp_path):
    """The file alone in an empty folder (as an attachment is saved), no network: the DOM holds
    the verdict and every model's row, the script ran (headers sortable), the console is silent."""
    alone = tmp_path / "attachment"
    alone.mkdir()
    page = shutil.copy(seeded_run / layout.REPORT_HTML, alone / "report.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--enable-logging=stderr", "--v=0", "--dump-dom", f"file://{page}"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    for line in sentences(build([load_run(seeded_run)])):
        assert line.replace("<", "&lt;") in dom.stdout
    for model in MODELS:
        assert re.search(rf"<tr><td class=\"num\">\d</td><td>{model}</td>", dom.stdout), model
    assert 'title="click to sort"' in dom.stdout  # the sorting script ran
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,1000", f"--screenshot={shot}", f"file://{page}"], check=True, capture_output=True, timeout=120)
    with Image.open(shot) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50, f"{shot} looks blank"


def test_a_link_planted_as_report_html_is_refused(two_model_run_copy, tmp_path):
    """Written through the run directory's guard: a symlink in its place is not followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    report = two_model_run_copy / layout.REPORT_HTML
    report.unlink()
    report.symlink_to(victim)
    result = cli("report", two_model_run_copy)
    assert result.exit_code == 2, result.output
    assert victim.read_text() == "mine" and report.is_symlink()
