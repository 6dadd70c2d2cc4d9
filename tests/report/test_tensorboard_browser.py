"""The browser tier: `compare tensorboard` serves a finished run, headless Chromium renders the
Scalars and HParams dashboards, and TensorBoard's own HTTP API shows every model's run and
its HParams row. Skipped (with the reason) where no Chromium is installed."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from tests.helpers import ROOT

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="browser tier: no chromium here (apt-get install chromium)")]
MODELS = ["fast", "slow", "stuck"]
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
BANDS = {f"{m}/mean_over_seeds" for m in MODELS}  # each model's mean and band over seeds (tests/report/test_tb_bands.py)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def served(seeded_run):
    """(base URL, expected run names: one per model and seed): TensorBoard started the way users start it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "compare", "tensorboard", str(seeded_run), "--port", str(port), "--host", "127.0.0.1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, expected = f"http://127.0.0.1:{port}", {f"{m}/seed_{s}" for m in MODELS for s in (0, 1, 2)}
    try:
        deadline = time.monotonic() + 120
        while True:  # TensorBoard loads event files in the background
            try:
                if set(get(f"{base}/data/runs")) >= expected | BANDS:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "TensorBoard did not come up with every run"
            time.sleep(1)
        yield base, expected
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def screenshot(url: str, path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                    "--window-size=1400,900", "--virtual-time-budget=20000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    with Image.open(path) as image:
        assert image.size == (1400, 900)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50, f"{path} looks blank"


def test_every_model_is_a_run_with_an_hparams_row_and_the_dashboards_render(served, tmp_path):
    base, expected = served
    assert set(get(f"{base}/data/runs")) == expected | BANDS
    groups = get(f"{base}/data/plugin/hparams/session_groups", {"experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0, "sliceSize": 100})
    sessions = {s["name"]: g for g in groups["sessionGroups"] for s in g["sessions"]}
    assert set(sessions) == expected  # one HParams row per run
    assert len({g["name"] for g in groups["sessionGroups"]}) == len(expected)  # trial IDs distinct
    for run, group in sessions.items():
        assert group["hparams"]["model"] == run.split("/")[0]
        assert "batch_size" not in group["hparams"]  # the same for every run: in the text summary
        assert "accuracy/test" in {m["name"]["tag"] for m in group["metricValues"]}
    experiment = get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {"model", "params", "optimizer.lr", "seed"} <= {h["name"] for h in experiment["hparamInfos"]}
    for tab in ("scalars", "hparams"):
        screenshot(f"{base}/#{tab}", tmp_path / f"{tab}.png")


def test_the_curves_are_drawn(served, tmp_path):
    """Not only the run names: the first row of Time Series charts holds coloured curves.
    Headless Chromium has no WebGL, where TensorBoard draws its charts by default (the chart
    areas stay empty); TensorBoard's own feature flag `?forceSVG=true` draws them as SVG."""
    base, _ = served
    path = tmp_path / "timeseries.png"
    screenshot(f"{base}/?forceSVG=true#timeseries", path)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        # The plot areas of the first two cards (below the tag group's header, above their legends).
        colourful = sum(1 for x in range(290, 1120, 2) for y in range(300, 545, 2) if max(rgb.getpixel((x, y))) - min(rgb.getpixel((x, y))) > 60)
    assert colourful > 100, f"{path}: the chart areas hold {colourful} coloured pixels (sampled): no curves drawn"


def test_custom_scalars_show_each_model_as_one_line_with_a_band(served, tmp_path):
    """With 3 seeds the custom-scalars page opens on the margin charts: one line per model
    (its band run) with a shaded 95% band, not one line per seed."""
    base, _ = served
    first = get(f"{base}/data/plugin/custom_scalars/layout")["category"][0]
    assert first["title"] == "compare: mean over 3 seeds, band 95% t-interval"
    assert all("margin" in chart for chart in first["chart"]) and first["chart"][-1]["title"] == "test accuracy"
    series = first["chart"][-1]["margin"]["series"][0]
    for run in BANDS:
        for tag in series.values():
            found = get(f"{base}/data/plugin/custom_scalars/scalars?run={run}&tag={tag}")["tag_to_events"][tag]
            assert [step for _, step, _ in found] == [1, 2], (run, tag)
    path = tmp_path / "custom_scalars.png"
    screenshot(f"{base}/#custom_scalars", path)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        # The first margin chart's plot area: lines (saturated) and bands (light tints).
        pixels = [rgb.getpixel((x, y)) for x in range(400, 720, 2) for y in range(150, 335, 2)]
    lines = sum(1 for p in pixels if max(p) - min(p) > 60)
    bands = sum(1 for p in pixels if 15 < max(p) - min(p) <= 60 and min(p) > 150)
    assert lines > 50 and bands > 200, f"{path}: {lines} line and {bands} band pixels (sampled) in the first margin chart"
