"""`compare export mlflow`: a finished run in a real MLflow SQLite store, read back with
MlflowClient: one parent, a child per model and seed, every curve equal to history.csv; a second
export adds nothing, a failed one is replaced; without mlflow, one line and exit 2."""
from __future__ import annotations

import math
import sys

import pandas as pd
import pytest

from compare.rundir import layout
from tests.helpers import cli

try:
    import mlflow
    from mlflow import MlflowClient
except ImportError:  # the test without mlflow still runs; the others need the extra
    mlflow = MlflowClient = None
needs_mlflow = pytest.mark.skipif(mlflow is None, reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")

NOT_CURVES = {"model", "seed", "epoch", "model_seed"}


def uri(folder) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def active(client: MlflowClient) -> list:
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]


@pytest.fixture(scope="module")
def exported(seeded_run, tmp_path_factory):
    store = tmp_path_factory.mktemp("mlflow")
    result = cli("export", "mlflow", seeded_run, "--tracking-uri", uri(store))
    assert result.exit_code == 0, result.stdout + result.stderr
    return store, MlflowClient(uri(store)), result.stdout


@needs_mlflow
def test_one_parent_and_one_child_per_model_and_seed_with_every_curve_of_history_csv(seeded_run, exported):
    store, client, out = exported
    runs = active(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    history = pd.read_csv(seeded_run / layout.HISTORY)
    assert len(parents) == 1 and len(children) == 9 == history.groupby(["model", "seed"]).ngroups
    assert f"parent run {parents[0].info.run_id}, 9 child runs" in out and "mlflow ui --backend-store-uri" in out
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["compare.export"] == "complete"
    assert parent.data.params["experiment.epochs"] == "2" and parent.data.params["data.dataset"] == "digits"
    assert client.get_experiment(parent.info.experiment_id).name == "t"  # the run's experiment name
    curves = [c for c in history.columns if c not in NOT_CURVES and pd.api.types.is_numeric_dtype(history[c])]
    board = pd.read_csv(seeded_run / layout.LEADERBOARD_CSV)
    for child in children:
        tags = child.data.tags
        assert {"model", "family", "seed", "arch", "status"} <= set(tags)
        rows = history[(history["model"] == tags["model"]) & (history["seed"] == int(tags["seed"]))].sort_values("epoch")
        assert tags["arch"] == "mlp" and tags["status"] == rows["status"].iloc[-1] and tags["family"] == tags["model"]
        for column in curves:
            expected = [(int(e), float(v)) for e, v in zip(rows["epoch"], rows[column]) if math.isfinite(v)]
            logged = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, column))
            assert logged == expected, (tags["model"], tags["seed"], column)
        row = board[board["model"] == tags["model"]].iloc[0]
        final = child.data.metrics
        assert final["leaderboard/rank"] == row["rank"] and final["leaderboard/test_acc_mean"] == pytest.approx(row["test_acc_mean"])
        if not math.isnan(row["p_vs_best"]):
            assert final["leaderboard/p_vs_best"] == pytest.approx(row["p_vs_best"])
        assert child.data.params["optimizer.lr"] == str(row["lr"]) or float(child.data.params["optimizer.lr"]) == row["lr"]
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)} | {f.path for f in client.list_artifacts(parent.info.run_id, "plots")}
    assert {layout.CONFIG, layout.LEADERBOARD_MD, "plots/" + layout.LEARNING_CURVES_PNG} <= artifacts
    assert (store / "mlartifacts").is_dir()  # beside the database, not in the folder compare ran in


@needs_mlflow
def test_exporting_the_same_run_again_adds_nothing(seeded_run, exported):
    store, client, _ = exported
    before = sorted(r.info.run_id for r in active(client))
    again = cli("export", "mlflow", seeded_run, "--tracking-uri", uri(store))
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert sorted(r.info.run_id for r in active(client)) == before


@needs_mlflow
def test_a_failed_export_is_replaced_by_the_next_one(seeded_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("the artifact store went away")

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "log_artifact", broken)  # fails after every child run is written
        failed = cli("export", "mlflow", seeded_run, "--tracking-uri", uri(tmp_path))
    assert failed.exit_code == 2 and "the artifact store went away; exporting again completes the run" in failed.stderr
    client = MlflowClient(uri(tmp_path))
    half = [r for r in active(client) if "mlflow.parentRunId" not in r.data.tags]
    assert len(half) == 1 and half[0].info.status == "FAILED" and half[0].data.tags["compare.export"] == "writing"
    done = cli("export", "mlflow", seeded_run, "--tracking-uri", uri(tmp_path))
    assert done.exit_code == 0 and "replacing 1 earlier" in done.stdout
    runs = active(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["compare.export"] == "complete" and len(runs) == 10


def test_without_mlflow_the_command_says_how_to_install_it_and_exits_2(two_model_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    result = cli("export", "mlflow", two_model_run, "--tracking-uri", uri(tmp_path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "pip install 'compare[mlflow]'" in result.stderr and not (tmp_path / "mlflow.db").exists()


@needs_mlflow
def test_a_bad_tracking_uri_or_run_directory_is_one_line_and_exit_2(two_model_run, tmp_path):
    bad = cli("export", "mlflow", two_model_run, "--tracking-uri", "nosuchscheme://x")
    assert bad.exit_code == 2 and "nosuchscheme://x" in bad.stderr and bad.stderr.count("\n") == 1
    missing = cli("export", "mlflow", tmp_path / "nope", "--tracking-uri", uri(tmp_path))
    assert missing.exit_code == 2 and "no such run directory" in missing.stderr


@needs_mlflow
def test_a_run_that_changed_since_its_export_replaces_it_and_a_moved_one_does_not(two_model_run_copy, tmp_path):
    first = cli("export", "mlflow", two_model_run_copy, "--tracking-uri", uri(tmp_path))
    assert first.exit_code == 0 and "2 child runs" in first.stdout
    moved = two_model_run_copy.rename(tmp_path / "rsynced")  # the same run in another folder
    assert "nothing to do" in cli("export", "mlflow", moved, "--tracking-uri", uri(tmp_path)).stdout
    with open(moved / layout.LEADERBOARD_MD, "a") as f:  # reported again since
        f.write("\nreported again\n")
    again = cli("export", "mlflow", moved, "--tracking-uri", uri(tmp_path))
    assert again.exit_code == 0 and "replacing 1 earlier" in again.stdout
    runs = active(MlflowClient(uri(tmp_path)))
    assert len(runs) == 3 and [r.data.tags["mlflow.note.content"].endswith("reported again\n") for r in runs if "mlflow.parentRunId" not in r.data.tags] == [True]
