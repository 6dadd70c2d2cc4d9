"""`compare bench`: the table and its CSV, bad input, the same work in every mode, and no
trace left on torch's global state. Speed is not asserted here (benchmarks/ measures it)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from compare.config import tomlio
from compare.bench.measure import DEFAULT_MODES, INTERVAL_REPEATS, BenchResult, Measurement, parse_modes, run_bench
from compare.cli.bench import bench_table, markdown
from compare.errors import ConfigError
from compare.bench.peak import datasheet_peak, precision_dtype
from tests.helpers import compare, digits_config, mlp

ALL = list(DEFAULT_MODES)  # what `compare bench` runs without --modes


@pytest.fixture(scope="module")
def bench_toml(tmp_path_factory):
    """Two models of one architecture (something for `fused`) and a CNN, on digits; no dropout,
    no augmentation, so every mode computes bit-for-bit the same training."""
    raw = digits_config([mlp("a", dropout=0.0), mlp("b", dropout=0.0, lr=0.05), {"name": "lenet", "arch": "lenet"}], epochs=1)
    path = tmp_path_factory.mktemp("bench") / "bench.toml"
    path.write_text(tomlio.dumps(raw))
    return path


@pytest.fixture(scope="module")
def twice(bench_toml):
    """Two benches in one process, and torch's global random state around them."""
    before = torch.get_rng_state()
    first = run_bench(bench_toml, modes=["separate", "shared", "loop"], steps=2, repeats=1, warmup=1)
    second = run_bench(bench_toml, modes=["separate", "shared", "loop"], steps=2, repeats=1, warmup=1)
    return before, torch.get_rng_state(), first, second


def test_cli_prints_every_mode_and_writes_the_csv(bench_toml, tmp_path):
    out, md = tmp_path / "bench.csv", tmp_path / "bench.md"
    proc = compare("bench", bench_toml, "--steps", 2, "--repeats", 1, "--warmup", 1, "--out", out, "--out", md)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ALL
    assert "MFU peak for" in proc.stdout and "measured" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.md"]  # --out is all it writes
    assert md.read_text().startswith("| mode | what it is |")

    table = pd.read_csv(out)
    expected = {"mode", "what", "seconds_per_step", "samples_models_per_s", "vs_separate", "vs_loop", "gflops_per_s", "peak_gflops_per_s", "peak_dtype", "mfu", "steps", "repeats", "batch_size", "models", "device", "data_seconds_per_step", "state_mb_per_model", "peak_mb_per_model"}
    assert expected <= set(table.columns)
    table = table.set_index("mode")
    assert list(table.index) == ALL
    assert table.loc["separate", "vs_separate"] == 1.0 and table.loc["loop", "vs_loop"] == 1.0
    assert (table["gflops_per_s"] > 0).all() and (table["mfu"] > 0).all() and (table["samples_models_per_s"] > 0).all()
    assert (table["models"] == 3).all() and (table["steps"] == 2).all()
    assert (table["state_mb_per_model"] > 0).all() and (table.drop(index="loop")["data_seconds_per_step"] > 0).all()
    assert table.loc["bf16", "peak_dtype"] == "bf16" and table.loc["shared", "peak_dtype"] == "fp32"


def test_unknown_mode_is_one_line_and_exit_2(bench_toml):
    proc = compare("bench", bench_toml, "--modes", "shared,turbo")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: --modes: turbo: unknown mode")
    assert proc.stdout == ""


def test_bad_counts_and_modes_are_config_errors(bench_toml):
    with pytest.raises(ConfigError, match="--steps: 0: expected >= 1"):
        run_bench(bench_toml, modes=["shared"], steps=0)
    with pytest.raises(ConfigError, match="did you mean 'shared'"):
        parse_modes("shard")
    assert parse_modes("loop, shared,loop") == ["loop", "shared"]


def test_every_mode_trains_the_same_models_on_the_same_batches(twice):
    _, _, first, _ = twice
    losses = {m.mode: m.losses for m in first.measurements}
    assert set(losses["shared"]) == {"a", "b", "lenet"}
    assert losses["separate"] == losses["shared"] == losses["loop"]  # bitwise on the CPU
    assert all(math.isfinite(v) for v in losses["shared"].values())


def test_a_bench_leaves_torch_global_state_alone(twice):
    before, after, first, second = twice
    assert torch.equal(before, after)
    assert [m.losses for m in first.measurements] == [m.losses for m in second.measurements]


def test_markdown_table_has_the_modes_and_how_the_peak_was_obtained(twice):
    text = markdown(twice[2])
    assert text.startswith("| mode | what it is |")
    for mode in ("separate", "shared", "loop"):
        assert f"| {mode} |" in text
    assert "| separate | one standard run per model, each its own DataLoader pass |" in text and "| 1.00 |" in text
    assert "MFU peak for loop, separate, shared: fp32" in text


def test_a_narrow_terminal_drops_the_descriptions_first_never_the_modes_or_ratios(twice):
    _, _, first, _ = twice
    table, dropped = bench_table(first, 200)
    assert dropped == [] and "what it is" in [c.header for c in table.columns]
    table, dropped = bench_table(first, 100)
    headers = [c.header for c in table.columns]
    assert dropped[0] == "what it is" and {"mode", "× separate", "× loop"} <= set(headers)
    assert not set(dropped) & set(headers)


def timed(mode: str, seconds: list[float]) -> list[Measurement]:
    return [Measurement(mode, repeat, s, steps=10, model_samples=640, losses={}, setup_seconds=0.0) for repeat, s in enumerate(seconds)]


def test_a_ratio_comes_with_a_bootstrap_interval_once_there_are_enough_repeats():
    loop = [0.10, 0.12, 0.09, 0.11, 0.10, 0.13, 0.10, 0.11, 0.12]
    noise = [1.0, 1.3, 0.9, 1.1, 1.2, 1.0, 1.15, 1.05, 1.25]  # the runner's time over the loop's, per repeat
    result = BenchResult(None, ["shared", "loop"], torch.device("cpu"), 10, 0, len(loop), {}, {})
    result.measurements = timed("shared", [t * r for t, r in zip(loop, noise)]) + timed("loop", loop)
    median = result.ratio("shared", "loop")
    assert median == pytest.approx(1 / 1.1)  # throughput ratio: the inverse of the median time ratio
    low, high = result.ratio_interval("shared", "loop")
    assert 1 / 1.3 < low <= median <= high <= 1.0 and low < high  # bootstrap medians lie on the data
    assert result.ratio_interval("shared", "loop") == (low, high)  # a fixed seed: the same table twice
    assert result.ratio_interval("loop", "loop") == (1.0, 1.0)

    result.measurements = [m for m in result.measurements if m.repeat < INTERVAL_REPEATS - 1]
    assert all(math.isnan(v) for v in result.ratio_interval("shared", "loop"))  # too few repeats to mean anything


def test_datasheet_peaks_match_the_card_not_a_prefix_of_it():
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bf16") == ("H100 SXM", pytest.approx(989.4e12))
    assert datasheet_peak("NVIDIA H100 PCIe", "tf32") == ("H100 PCIe", pytest.approx(378e12))
    assert datasheet_peak("NVIDIA H200", "fp32")[0] == "H200 SXM"
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "tf32") == ("A100", pytest.approx(156e12))
    assert datasheet_peak("NVIDIA L4", "bf16")[0] == "L4" and datasheet_peak("NVIDIA L40S", "bf16")[0] == "L40S"
    assert datasheet_peak("NVIDIA A10G", "bf16") is None  # not the A10: measured instead
    assert datasheet_peak("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 on Volta
    assert precision_dtype("bf16-mixed", torch.device("cpu")) == "bf16"
    assert precision_dtype("32", torch.device("cpu")) == "fp32"
