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
    """(base URL, expected run names): TensorBoard started the way users start it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "tensorboard", str(seeded_run), "--port", str(port), "--host", "127.0.0.1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, expected = f"http://127.0.0.1:{port}", {f"{m}/seed_{s}" for m in MODELS for s in (0, 1, 2)}
    try:
        deadline = time.monotonic() + 120
        while True:  # TensorBoard loads event files in the background
            try:
                if set(get(f"{base}/data/runs")) >= expected:
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
    assert set(get(f"{base}/data/runs")) == expected
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
