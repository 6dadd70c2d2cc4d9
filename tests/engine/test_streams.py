"""`experiment.streams` and `experiment.compile = "reduce-overhead"`: the config, the CPU
fallback users see, and the CUDA stream logic (run against a recording stand-in for torch.cuda,
since this tier has no GPU; benchmarks/gpu_perf_check.sh times the real thing)."""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import pytest
import torch

from compare.assemble.validate import config_from_dict
from compare.engine import streams as streams_module
from compare.engine.streams import TRIAL_STEPS, Streams
from compare.errors import ConfigError
from tests.helpers import compare, digits_config, mlp, write_config


def test_streams_on_a_cpu_run_falls_back_with_one_warning_line(tmp_path):
    cfg = write_config(tmp_path, [mlp("a"), mlp("b")], epochs=1)
    proc = compare("run", cfg, "--out", tmp_path / "on", "-q", "--no-plots", "--set", 'experiment.streams="on"')
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "experiment.streams" in line]
    assert lines == ['warning: experiment.streams = "on": CUDA streams need a CUDA device; the models run one after another on cpu'], proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default, auto: on a CPU nothing to warn about
        assert Streams("auto", [torch.device("cpu")]).enabled is False


@pytest.mark.parametrize("key, value, expected", [
    ("streams", "sideways", "<dict>: experiment.streams: expected one of off, on, auto, got 'sideways'"),
    ("compile", "reduce-overheads", "<dict>: experiment.compile: expected true, false or a torch.compile mode (default, reduce-overhead, max-autotune, "
                                    "max-autotune-no-cudagraphs), got 'reduce-overheads'; did you mean 'reduce-overhead'"),
])
def test_bad_streams_and_compile_values_are_config_errors(key, value, expected):
    """What the CLI prints after `error:` (exit 2; tests/cli covers that mapping)."""
    raw = digits_config([mlp("a")])
    raw["experiment"][key] = value
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert str(err.value).startswith(expected), str(err.value)


class FakeCuda:
    """Records what Streams asks of torch.cuda: events, waits, stream contexts, syncs."""

    def __init__(self):
        self.log: list[tuple] = []
        self.active = "current"
        fake = self

        class Stream:
            count = 0

            def __init__(self, device):
                Stream.count += 1
                self.name = f"s{Stream.count}"

            def wait_event(self, event):
                fake.log.append(("wait_event", self.name, event))

            def record_event(self):
                fake.log.append(("record", self.name))
                return f"ready@{self.name}"

            def wait_stream(self, other):
                fake.log.append(("join", self.name, other.name))

        self.Stream = Stream
        self.current = Stream(None)
        self.current.name = "current"

    def current_stream(self, device=None):
        return self.current

    @contextmanager
    def stream(self, stream):
        outer, self.active = self.active, stream.name
        try:
            yield
        finally:
            self.active = outer

    def synchronize(self, device=None):
        self.log.append(("sync",))


class Unit:
    def __init__(self, name, fake):
        self.name, self.fake, self.device = name, fake, torch.device("cuda", 0)

    def work(self):
        self.fake.log.append(("work", self.name, self.fake.active))


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    for name in ("Stream", "current_stream", "stream", "synchronize"):
        monkeypatch.setattr(streams_module.torch.cuda, name, getattr(fake, name))
    return fake


def test_each_unit_runs_on_its_own_stream_after_the_batch_and_is_joined_before_any_read(fake_cuda):
    units = [Unit("a", fake_cuda), Unit("b", fake_cuda)]
    streams = Streams("on", [u.device for u in units])
    for _ in range(2):
        fake_cuda.log.clear()
        streams.step(units, lambda u: u.work())
        assert fake_cuda.log == [
            ("record", "current"),  # the batch was copied on the current stream: one event
            ("wait_event", "s2", "ready@current"), ("work", "a", "s2"),
            ("wait_event", "s3", "ready@current"), ("work", "b", "s3"),
            ("join", "current", "s2"), ("join", "current", "s3"),  # GPU-side waits, no host sync
        ]


def test_auto_times_both_ways_then_keeps_one_without_syncing_again(fake_cuda):
    units = [Unit("a", fake_cuda), Unit("b", fake_cuda)]
    streams = Streams("auto", [u.device for u in units])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2 * TRIAL_STEPS):
            streams.step(units, lambda u: u.work())
    assert streams.enabled in (True, False)
    assert [str(w.message).split(":")[0] for w in caught] == ["experiment.streams = auto"]
    assert "ms with a stream per model" in str(caught[0].message)
    fake_cuda.log.clear()
    streams.step(units, lambda u: u.work())
    assert ("sync",) not in fake_cuda.log


def test_one_unit_or_streams_off_runs_in_order_on_the_current_stream(fake_cuda):
    units = [Unit("a", fake_cuda), Unit("b", fake_cuda)]
    Streams("off", [u.device for u in units]).step(units, lambda u: u.work())
    Streams("on", [units[0].device]).step(units[:1], lambda u: u.work())
    assert fake_cuda.log == [("work", "a", "current"), ("work", "b", "current"), ("work", "a", "current")]


def test_compile_reduce_overhead_reaches_torch_compile_and_trains(monkeypatch, run):
    """The mode is passed through (compiling itself takes minutes on this CPU: `compare bench
    --modes shared,compiled` measures it; docs/performance.md has the figure)."""
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    result = run(digits_config([mlp("m")], epochs=1), "compiled", overrides=['experiment.compile="reduce-overhead"'])
    assert modes == ["reduce-overhead"] and (result.leaderboard["status"] == "done").all()
