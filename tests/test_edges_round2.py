"""Issue 24, "Edges, round 2": planted links at every path compare writes, checkpoints that
cannot be verified, inputs that exited 1, and unclear messages. Tests that need a run directory
copy one tiny finished run (`two_model_run` in tests/conftest.py, trained once per session)."""
from __future__ import annotations

import shutil
import zipfile

import pytest

from compare.config import tomlio
from compare.errors import CompareWarning, RunDirError
from compare.report.finalize import finalize_run
from compare.rundir.layout import CHECKPOINT as LATEST, CHECKPOINTS as FOLDER, MANIFEST
from compare.rundir.guard import check_no_links
from tests.helpers import cli, digits_config, mlp


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def listing(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_dir(two_model_run_copy):
    return two_model_run_copy  # tests/conftest.py: a private copy of a finished two-model run


# --- 1. no writer goes through a link planted in the run directory ------------------------------

def plant(run_dir, entry: str, victim):
    """Replace RUN/entry by a link to `victim` (holding a precious file, or being one)."""
    path = run_dir / entry
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if entry.endswith((".png", ".csv", ".md")):
        victim.write_text("precious")
    else:
        victim.mkdir()
        (victim / "learning_curves.png").write_text("precious")
    path.symlink_to(victim)
    return path


LINKED = "is a symbolic link; compare writes only real files in its run directory: remove the link"


@pytest.mark.parametrize("entry", ["plots", "plots/learning_curves.png"])
def test_compare_plot_refuses_a_planted_link(run_dir, tmp_path, entry):
    link = plant(run_dir, entry, tmp_path / "victim")
    before = listing(tmp_path / "victim") if link.is_dir() else link.read_bytes()
    result = cli("plot", run_dir)
    assert result.exit_code == 2 and errors(result) == [f"error: {link} {LINKED}"], result.stderr
    assert (listing(tmp_path / "victim") if link.is_dir() else link.read_bytes()) == before
    assert link.is_symlink()


@pytest.mark.parametrize("entry", ["leaderboard.csv", "leaderboard.md", "tb/a"])
def test_the_reports_refuse_a_planted_link(run_dir, tmp_path, entry):
    link = plant(run_dir, entry, tmp_path / "victim")
    before = listing(tmp_path / "victim") if link.is_dir() else link.read_bytes()
    with pytest.raises(RunDirError, match=f"^{link} {LINKED}$"):
        finalize_run(run_dir, plots=False)  # what the end of a run and a resume of a finished one write
    result = cli("resume", run_dir, "--no-plots", "-q")
    assert result.exit_code == 2 and len(errors(result)) == 1 and LINKED in result.stderr, result.stderr
    assert (listing(tmp_path / "victim") if link.is_dir() else link.read_bytes()) == before


def test_leaderboard_out_refuses_a_link_in_a_run_directory(run_dir, tmp_path):
    link = plant(run_dir, "plots", tmp_path / "victim")
    result = cli("leaderboard", run_dir, "--format", "md", "--out", link / "learning_curves.png")
    assert result.exit_code == 2 and errors(result) == [f"error: {link} {LINKED}"], result.stderr
    assert (tmp_path / "victim" / "learning_curves.png").read_text() == "precious"
    outside = tmp_path / "elsewhere.md"  # outside every run directory: the user's own folder
    assert cli("leaderboard", run_dir, "--format", "md", "--out", outside).exit_code == 0 and outside.is_file()


def test_model_files_are_checked_by_the_same_function(run_dir, tmp_path):
    """RUN/models/<model>/... : the one check every writer calls refuses a link on the way."""
    link = plant(run_dir, "models", tmp_path / "victim")
    with pytest.raises(RunDirError, match=f"^{link} {LINKED}$"):
        check_no_links(run_dir / "models" / "a" / "weights.pt")  # the run directory found by its marker
    with pytest.raises(RunDirError, match=f"^{link} {LINKED}$"):
        check_no_links(run_dir / "models" / "a" / "weights.pt", run_dir)
    result = cli("resume", run_dir, "--no-plots", "-q")
    assert result.exit_code == 2 and errors(result) == [f"error: {link} {LINKED}"], result.stderr
    assert listing(tmp_path / "victim") == {"learning_curves.png": b"precious"}
    assert check_no_links(run_dir / "models2" / "a.pt") == run_dir / "models2" / "a.pt"  # nothing linked
    from torch import nn  # noqa: PLC0415

    from compare.run.sinks import write_weights  # noqa: PLC0415 - the writer of models/<model>/final.pt itself

    for which in ("final", "best_val"):
        with pytest.raises(RunDirError, match=f"^{link} {LINKED}$"):
            write_weights(run_dir, "a", None, which, nn.Linear(1, 1))
    assert listing(tmp_path / "victim") == {"learning_curves.png": b"precious"}


# --- 2. a checkpoint no manifest vouches for ------------------------------------------------------

def flip_a_tensor_bit(checkpoint) -> None:
    """One bit inside the largest tensor's bytes (torch.save stores members uncompressed)."""
    with zipfile.ZipFile(checkpoint) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(checkpoint.read_bytes())
    header = info.header_offset
    name_len, extra_len = int.from_bytes(data[header + 26 : header + 28], "little"), int.from_bytes(data[header + 28 : header + 30], "little")
    data[header + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    checkpoint.write_bytes(bytes(data))


@pytest.mark.parametrize("manifest", ["missing", "{}"])
def test_a_damaged_checkpoint_without_a_manifest_is_refused(run_dir, manifest):
    folder = run_dir / FOLDER
    flip_a_tensor_bit(folder / LATEST)
    (folder / "checkpoint.prev.pt").unlink(missing_ok=True)
    if manifest == "missing":
        (folder / MANIFEST).unlink()
    else:
        (folder / MANIFEST).write_text(manifest)
    for extra in ((), ("--accept-unverified",)):  # a damaged file is refused even when accepted
        result = cli("resume", run_dir, "--no-plots", "-q", *extra)
        assert result.exit_code == 2 and len(errors(result)) == 1, result.stderr
        assert f"{LATEST}: the CRC32 of its member" in result.stderr and "does not match: the file is damaged" in result.stderr


@pytest.mark.parametrize("manifest", ["missing", "{}"])
def test_an_intact_checkpoint_without_a_manifest_needs_accept_unverified(run_dir, manifest):
    folder = run_dir / FOLDER
    if manifest == "missing":
        (folder / MANIFEST).unlink()
    else:
        (folder / MANIFEST).write_text(manifest)
    result = cli("resume", run_dir, "--no-plots", "-q")
    assert result.exit_code == 2 and len(errors(result)) == 1 and len(errors(result)[0]) <= 300, result.stderr
    why = "missing" if manifest == "missing" else "unreadable (KeyError: 'checkpoints')"
    assert errors(result) == [f"error: cannot resume {run_dir}: checkpoints/manifest.json is {why}, "
                              "so checkpoint.pt cannot be verified (its zip checksums pass, which not every change fails); --accept-unverified trusts it anyway"]
    with pytest.warns(CompareWarning, match="resuming from checkpoint.pt, checked by its zip checksums only"):
        result = cli("resume", run_dir, "--no-plots", "-q", "--accept-unverified")
    assert result.exit_code == 0, result.stderr
    assert "already finished" in result.stdout


# --- 4. inputs that exited 1 ----------------------------------------------------------------------

def test_leaderboard_out_into_a_missing_folder_is_exit_2(run_dir, tmp_path):
    out = tmp_path / "missing_dir" / "x.md"
    result = cli("leaderboard", run_dir, "--format", "md", "--out", out)
    assert result.exit_code == 2 and errors(result) == [f"error: --out {out}: the folder {out.parent} does not exist; create it first"], result.stderr
    assert not out.parent.exists()


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_run_config_that_is_not_utf8_is_exit_2(run_dir, command):
    (run_dir / "config.toml").write_bytes(b"[experiment]\nname = \"\xff\"\n")
    result = cli(command, run_dir)
    lines = errors(result)
    assert result.exit_code == 2 and len(lines) == 1 and len(lines[0]) <= 300, result.stderr
    assert lines[0].startswith(f"error: {run_dir / 'config.toml'}: cannot read: 'utf-8' codec can't decode byte 0xff"), lines


def config_file(tmp_path, models=None):
    raw = digits_config(models or [mlp("a"), mlp("b")], epochs=1, batch_size=32, eval_batch_size=64, subset=64, test_subset=32)
    path = tmp_path / "exp.toml"
    path.write_text(tomlio.dumps(raw))
    return path


def test_a_long_out_is_refused_and_leaves_no_folders(tmp_path):
    for out in (tmp_path / "a" / "b" / ("x" * 300), tmp_path / "c" / "d" / ("x/" * 2100)):
        result = cli("run", config_file(tmp_path), "--out", out, "-q", "--no-plots")
        lines = errors(result)
        assert result.exit_code == 2 and len(lines) == 1 and len(lines[0]) <= 300, result.stderr
        assert "choose a shorter --out" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


# --- 9. unclear messages ---------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("model.a=nope", "error: --set: model.a: is the [[model]] table 'a'; set one of its keys, e.g. model.a.optimizer.lr=0.1"),
    ("model.c=nope", "error: --set: model.c: no model named 'c'"),
    ("model.a.name=b", "error: --set: model.b.name: duplicate model name 'b'"),
])
def test_set_messages_name_the_set_and_make_sense(tmp_path, override, expected):
    result = cli("run", config_file(tmp_path), "--dry-run", "--set", override)
    assert result.exit_code == 2 and errors(result) == [expected], result.stderr


def test_an_arch_from_set_that_takes_no_args_says_so(tmp_path):
    path = config_file(tmp_path)
    result = cli("run", path, "--dry-run", "--set", "model.a.arch=lenet")
    assert result.exit_code == 2, result.stderr
    assert errors(result) == [f"error: {path}: model.a.args.{key}: unknown argument (it takes no arguments); model.a.arch was set with --set" for key in ("hidden", "dropout")]


@pytest.mark.parametrize("seeds", ["0,,1", "0,1,", ",0"])
def test_seeds_with_an_empty_part_are_refused(tmp_path, seeds):
    result = cli("run", config_file(tmp_path), "--dry-run", "--seeds", seeds)
    assert result.exit_code == 2 and errors(result) == [f"error: --seeds: experiment.seeds: expected distinct comma-separated integers like 0,1,2, got {seeds!r}"]


@pytest.mark.parametrize("command", ["resume", "leaderboard"])
def test_a_planted_config_symlink_is_named_as_a_link(run_dir, tmp_path, command):
    target = tmp_path / "elsewhere.toml"
    target.write_text("this is = not [toml\n")
    (run_dir / "config.toml").unlink()
    (run_dir / "config.toml").symlink_to(target)
    result = cli(command, run_dir)
    lines = errors(result)
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    if command == "resume":
        assert lines == [f"error: {run_dir / 'config.toml'} {LINKED}"]
    else:
        assert lines[0].startswith(f"error: {run_dir / 'config.toml'} (a symbolic link to {target}): cannot read:")
