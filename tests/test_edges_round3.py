"""Issue 24, "Edges, round 2", items 5-7: damaged prediction files, a run stopped in start-up,
and configs the dry run passed that the real run refused. Tests that need a run directory copy
one tiny finished run (`two_model_run` in tests/conftest.py, trained once per session)."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import torch

from compare.resolve import components
from compare.config import tomlio
from compare.assemble.validate import config_from_dict
from compare.errors import CompareNote
from compare.report.run_data import read_prediction_file
from compare.run.dryrun import PROBE_BYTES, probe_size
from compare.rundir.guard import MARKER, holds_a_run
from tests.helpers import cli, digits_config, killable, launch, mlp, write, write_config


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def run_dir(two_model_run_copy):
    return two_model_run_copy  # tests/conftest.py: a private copy of a finished two-model run


def truncate(path, size: int = 200) -> None:
    path.write_bytes(path.read_bytes()[:size])  # what `head -c 200` of it, written back, leaves


# --- 5. a truncated predictions file ------------------------------------------------------------

def test_a_truncated_predictions_file_is_one_note_and_the_reports_go_on(run_dir):
    damaged = run_dir / "predictions" / "a" / "seed_0.npz"
    truncate(damaged)
    for command in ("leaderboard", "plot"):
        result = cli(command, run_dir)
        assert result.exit_code == 0, result.output
        notes = [line for line in " ".join(result.output.split()).split("note: ")[1:] if "damaged" in line]  # lines wrap at the terminal's width
        assert len(notes) == 1 and str(damaged) in notes[0] and "no paired test for a" in notes[0], result.output


def test_resume_rebuilds_a_truncated_predictions_file_from_the_checkpoint(run_dir):
    damaged = run_dir / "predictions" / "a" / "seed_0.npz"
    before = read_prediction_file(damaged)
    truncate(damaged)
    with pytest.warns(CompareNote, match=f"{damaged} was damaged .*; rebuilt from the checkpoint"):
        result = cli("resume", run_dir, "--no-plots")
    assert result.exit_code == 0, result.output
    after = read_prediction_file(damaged)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert "damaged" not in cli("leaderboard", run_dir).output


# --- 6. a kill or a signal in start-up -----------------------------------------------------------

def start_slowly(tmp_path):
    """A run that sleeps in start-up; returns it once its config.toml is written."""
    config = write_config(tmp_path, [killable("a"), killable("b")], epochs=1)
    out = tmp_path / "runs" / "run"
    proc = launch("run", config, "--out", out, "-q", env={"SLOW_START_S": "60"}, wait=False)
    deadline = time.time() + 120
    while not (out / "config.toml").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (out / "config.toml").exists(), proc.communicate()
    return proc, out, config


def test_a_run_killed_in_start_up_is_started_by_resume(tmp_path):
    proc, out, config = start_slowly(tmp_path)
    proc.kill()
    proc.wait()
    assert not holds_a_run(out), sorted(p.name for p in out.iterdir())  # `run --out` may start there again
    result = launch("resume", out, "-q")
    assert result.returncode == 0, result.stderr
    assert (out / "history.csv").exists() and (out / "leaderboard.csv").exists()


def test_two_sigterms_in_start_up_exit_143_and_leave_a_run_to_resume(tmp_path):
    proc, out, _ = start_slowly(tmp_path)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: interrupted by SIGTERM; stopped at once in start-up, before training; `compare resume {out}` starts it"
    ], stderr
    assert (out / "config.toml").exists() and (out / MARKER).exists() and not holds_a_run(out)


def test_bad_input_found_in_start_up_leaves_nothing(tmp_path):
    raw = digits_config([mlp("a")], epochs=1, train_transforms=[{"name": "CenterCrop", "size": 6}])
    config = tmp_path / "exp.toml"
    config.write_text(tomlio.dumps(raw))
    result = cli("run", config, "--out", tmp_path / "new" / "run", "--no-plots")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "new").exists()


# --- 7. the dry run refuses what the run refuses -------------------------------------------------

def plateau_per_step(raw):
    raw["model"][0]["scheduler"] = {"name": "ReduceLROnPlateau", "interval": "step"}
    raw["data"]["val_fraction"] = 0.2


CASES = {
    "device": lambda raw: raw["model"][0].update(device="cuda" if not torch.cuda.is_available() else "mps"),
    "batch_size": lambda raw: raw["data"].update(batch_size=100_000),
    "train_only_crop": lambda raw: raw["data"].update(train_transforms=[{"name": "CenterCrop", "size": 6}]),
    "plateau_per_step": plateau_per_step,
    "num_workers": lambda raw: raw["data"].update(num_workers=2**63 - 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_dry_run_fails_as_the_run_does(tmp_path, case):
    if case == "device" and torch.backends.mps.is_available():
        pytest.skip("this machine has both CUDA and MPS")
    raw = digits_config([mlp("a"), mlp("b")], epochs=1, subset=300, test_subset=100)
    CASES[case](raw)
    config = tmp_path / "exp.toml"
    config.write_text(tomlio.dumps(raw))
    dry = cli("run", config, "--out", tmp_path / "dry", "--dry-run")
    real = cli("run", config, "--out", tmp_path / "real", "--no-plots")
    assert dry.exit_code == real.exit_code == 2, (dry.output, real.output)
    assert errors(dry) == [e.replace(str(tmp_path / "real"), str(tmp_path / "dry")) for e in errors(real)] and errors(dry), (dry.stderr, real.stderr)
    assert not (tmp_path / "dry").exists() and not (tmp_path / "real").exists()


def test_the_dry_run_probes_a_bounded_part_of_a_huge_batch():
    """Pad(padding=1000) makes each 8x8 digit a 16 MB sample: the probe takes PROBE_BYTES of them."""
    pad = [{"name": "Pad", "padding": 1000}]
    cfg = config_from_dict(digits_config([mlp("a")], subset=300, test_subset=100, train_transforms=pad, eval_transforms=pad))
    data = components.load_dataset(cfg.data, cfg.base_dir)
    assert probe_size(cfg, data) == PROBE_BYTES // (2008 * 2008 * 4) < cfg.data.batch_size
    small = config_from_dict(digits_config([mlp("a")], subset=300, test_subset=100))
    assert probe_size(small, components.load_dataset(small.data, small.base_dir)) == small.data.batch_size


# --- Issue 36, "Edges, round 3" ------------------------------------------------------------------

DICT_MODEL = '''
import torch
from torch import nn


class TwoHeads(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.main, self.aux = nn.Linear(64, num_classes), nn.Linear(64, num_classes)

    def forward(self, x):
        return {"logits": self.main(x.flatten(1)), "aux": self.aux(x.flatten(1))}


class Plain(TwoHeads):
    def forward(self, x):
        return super().forward(x)["logits"]
'''


@pytest.mark.parametrize("arch", ["TwoHeads", "Plain"])
def test_a_report_output_typo_names_the_output_keys_not_a_forward_error(tmp_path, arch):
    (tmp_path / "heads.py").write_text(DICT_MODEL)
    raw = digits_config([{"name": "a", "arch": f"heads.py:{arch}", "optimizer": {"name": "SGD", "lr": 0.1}}], epochs=1)
    raw["report"] = {"output": "logit"}  # a typo for `logits`; a tensor has a `logit` method
    result = cli("run", write(tmp_path, raw), "--out", tmp_path / "dry", "--dry-run")
    assert result.exit_code == 2, result.output
    expected = {
        "TwoHeads": "report.output: the model's output has no key 'logit'; it has: logits, aux; did you mean 'logits'?",
        "Plain": "report.output: 'logit': the model returns a plain tensor, which has no keys (remove the setting)",
    }[arch]
    assert errors(result) == [f"error: {tmp_path / 'exp.toml'}: {expected}"], result.stderr
