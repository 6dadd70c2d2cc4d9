"""`compare export mlflow`: a finished run directory into an MLflow tracking store.

One parent run per compare run (the config as params, env.json as tags, leaderboard.md as its
description, the config, tables, report.html and plots as artifacts) and one child per model and
seed (tags model, family, seed, arch, status; the model's config and models.csv row as params;
every numeric history.csv column per epoch, step = epoch; the model's leaderboard row as
`leaderboard/<column>` at its last epoch). Everything goes through MlflowClient with explicit
run ids: no global active run, nothing left set in the caller's mlflow.

Idempotent. The parent carries the run's identity, `compare.run_key` (a hash of config.toml and
env.json's start time, so a run rsynced to another folder is still the same run), and the
export's content, `compare.digest` (a hash of every file exported); its `compare.export` tag
becomes "complete" only after the last child and artifact. A re-export finds the parents with
that key: a complete one of the same digest means nothing to do; any other (a failed or
interrupted export, or a run that changed since, e.g. resumed) is deleted with its children,
then the run is written again. MLflow deletes softly (`mlflow gc` purges).
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from compare.errors import ReportError, clip, one_line
from compare.rundir import layout

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow's default store since 3.7 (its file store is deprecated)
INSTALL = "pip install 'compare[mlflow]' (in a checkout: pip install -e '.[mlflow]')"
KEY, DIGEST, STATE = "compare.run_key", "compare.digest", "compare.export"
NOT_METRICS = {"model", "seed", "epoch", "model_seed"}  # model_seed is 64-bit: as a float it would round; a tag
TOP_FILES = (layout.CONFIG, layout.ENV, layout.MODELS_CSV, layout.HISTORY, layout.LEADERBOARD_CSV, layout.LEADERBOARD_MD,
             layout.FAMILIES_CSV, layout.FAMILIES_MD, layout.TUNING_CURVES, layout.REPORT_HTML)
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100  # MLflow's log_batch limits
PARAM_CHARS = 6000  # MLflow's longest param value


@dataclass
class Exported:
    experiment: str
    parent_id: str
    children: int
    replaced: int  # earlier exports of this run deleted (failed, interrupted or outdated)
    unchanged: bool  # already exported, complete and the same: nothing written


def import_client():
    """MlflowClient, or the one line that says how to install it (mlflow is an optional extra)."""
    try:
        from mlflow import MlflowClient  # noqa: PLC0415 - optional and slow to import
    except ImportError as err:
        raise ReportError(f"compare export mlflow needs the mlflow package ({one_line(err)}): {INSTALL}") from None
    return MlflowClient


def export_run(run_dir: str | Path, tracking_uri: str = DEFAULT_URI, experiment: str | None = None) -> Exported:
    from compare.report.leaderboard import build  # noqa: PLC0415 - pandas and the report only when a command runs
    from compare.report.run_data import load_run  # noqa: PLC0415

    client_class = import_client()
    run = load_run(run_dir)
    board = build([run]).table
    name = experiment or run.config.get("experiment", {}).get("name") or run.label
    files = [run.path / f for f in TOP_FILES if (run.path / f).is_file()] + sorted((run.path / layout.PLOTS).glob("*.png"))
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        with quiet_mlflow():
            return _export(client_class(tracking_uri), run, board, files, name, tracking_uri, run_key(run), content_digest(files))
    except MlflowException as err:  # the store refused or went away: the user's to fix, then export again
        raise ReportError(f"MLflow store {clip(tracking_uri)}: {clip(one_line(err))}; exporting again completes the run") from None


def _export(client, run, board, files: list[Path], name: str, tracking_uri: str, key: str, digest: str) -> Exported:
    """Find this run's earlier exports; write it unless one is complete and the same."""
    experiment_id = _experiment(client, name, tracking_uri)
    earlier = _runs(client, experiment_id, f"tags.`{KEY}` = '{key}'")
    done = [r for r in earlier if r.data.tags.get(STATE) == "complete" and r.data.tags.get(DIGEST) == digest]
    if done:
        return Exported(name, done[0].info.run_id, len(_runs(client, experiment_id, _children_of(done[0].info.run_id))), 0, True)
    for parent in earlier:  # half-written or outdated: replaced as a whole, never patched
        for child in _runs(client, experiment_id, _children_of(parent.info.run_id)):
            client.delete_run(child.info.run_id)
        client.delete_run(parent.info.run_id)
    parent_id = _write(client, experiment_id, run, board, files, key, digest)
    return Exported(name, parent_id, sum(len(g) for g in _seed_groups(run)), len(earlier), False)


def _write(client, experiment_id: str, run, board, files: list[Path], key: str, digest: str) -> str:
    from mlflow.entities import Metric, Param  # noqa: PLC0415
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: PLC0415

    start = started_ms(run.env) or int(time.time() * 1000)  # env.json without a start time: now
    tags = {KEY: key, DIGEST: digest, STATE: "writing", "compare.run_dir": str(run.path.resolve())}
    tags |= {f"env.{k}": clip(" ".join(map(str, v)) if isinstance(v, list) else str(v), PARAM_CHARS) for k, v in run.env.items() if not isinstance(v, dict) and k != "classes"}
    if run.env.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(run.env["git_commit"])
    if (run.path / layout.LEADERBOARD_MD).is_file():  # the run page's description, rendered as Markdown
        tags["mlflow.note.content"] = (run.path / layout.LEADERBOARD_MD).read_text()
    parent = client.create_run(experiment_id, start_time=start, tags=tags, run_name=run.label).info.run_id
    ends = [start]  # each child's end: the parent ends with the last one, not at the export
    try:
        config = {k: v for k, v in run.config.items() if k != "model"}  # each model's table goes to its children
        _log(client, parent, params=[Param(k, v) for k, v in flatten(config).items()])
        for model, seeds in zip(run.model_names, _seed_groups(run)):
            entry = next((m for m in run.config.get("model", []) if m.get("name") == model), {})
            facts = run.models[run.models["model"] == model].drop(columns="model")
            facts = {k: v for k, v in (facts.iloc[0].to_dict() if len(facts) else {}).items() if _present(v)}
            row = board[board["model"] == model]
            final = {f"leaderboard/{c}": float(v) for c, v in (row.iloc[0].to_dict() if len(row) else {}).items() if _number(v)}
            for seed, h in seeds:
                status = str(h["status"].iloc[-1]) if "status" in h else ""
                child_tags = {MLFLOW_PARENT_RUN_ID: parent, "model": model, "family": str(facts.get("family", entry.get("family", model))),
                              "seed": str(seed), "arch": str(facts.get("arch", entry.get("arch", ""))), "status": status}
                if "model_seed" in h and _present(h["model_seed"].iloc[-1]):
                    child_tags["model_seed"] = str(int(h["model_seed"].iloc[-1]))
                label = model if len(seeds) == 1 else f"{model} seed {seed}"
                child = client.create_run(experiment_id, start_time=start, tags=child_tags, run_name=label).info.run_id
                params = flatten({k: v for k, v in entry.items() if k != "name"}) | {f"models.{k}": _param(v) for k, v in facts.items()}
                last, times = int(h["epoch"].iloc[-1]), timestamps(start, h)
                metrics = [Metric(c, float(v), t, int(e)) for c in h.columns if c not in NOT_METRICS and _numeric(h[c])
                           for e, v, t in zip(h["epoch"], h[c], times) if _number(v)]
                metrics += [Metric(k, v, times[-1], last) for k, v in final.items()]
                _log(client, child, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
                ends.append(times[-1])
                client.set_terminated(child, "FAILED" if status in ("diverged", "failed") else "FINISHED", end_time=ends[-1])
        for f in files:
            client.log_artifact(parent, str(f), layout.PLOTS if f.parent.name == layout.PLOTS else None)
        client.set_tag(parent, STATE, "complete")  # last: only now does a re-export leave this run alone
        client.set_terminated(parent, "FINISHED", end_time=max(ends))
    except BaseException:
        try:
            client.set_terminated(parent, "FAILED")  # still tagged "writing": the next export replaces it
        except Exception:  # noqa: BLE001, S110 - the store may be what failed; the first error is the one to show
            pass
        raise
    return parent


def _log(client, run_id: str, params=(), metrics=()) -> None:
    params, metrics = list(params), list(metrics)
    for i in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[i:i + PARAMS_PER_BATCH])
    for i in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + METRICS_PER_BATCH])


def _seed_groups(run) -> list[list[tuple[int, object]]]:
    """Per model (run.model_names' order): [(seed, its history rows by epoch)]."""
    h = run.history
    return [[(int(s), g.sort_values("epoch")) for s, g in h[h["model"] == m].groupby("seed", sort=True)] for m in run.model_names]


def _experiment(client, name: str, tracking_uri: str) -> str:
    """The experiment's id, created if new; a SQLite store's new experiment keeps its artifacts
    beside the database (MLflow's default would be ./mlruns under whatever folder compare ran in)."""
    try:
        found = client.get_experiment_by_name(name)
    except Exception as err:  # noqa: BLE001 - a bad URI or an unreachable server: the user's to fix
        raise ReportError(f"--tracking-uri {clip(tracking_uri)}: {clip(one_line(err))}") from None
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise ReportError(f"MLflow experiment {name!r} is deleted in {clip(tracking_uri)}: restore it (mlflow experiments restore) or give --experiment another name")
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        location = (db.parent / "mlartifacts" / re.sub(r"[^\w.-]", "_", name)).as_uri()
    # The UI then opens the experiment on its runs (model training), not on GenAI traces.
    return client.create_experiment(name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"})


def _runs(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _children_of(parent_id: str) -> str:
    return f"tags.`mlflow.parentRunId` = '{parent_id}'"


def run_key(run) -> str:
    """The run's identity wherever its folder lies: its config and the moment it started."""
    config = run.path / layout.CONFIG
    h = hashlib.sha256(config.read_bytes() if config.is_file() else b"")
    h.update(str(run.env.get("started_utc") or run.path.resolve()).encode())  # no start time recorded: its folder
    return h.hexdigest()[:32]


def content_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:32]


def started_ms(env: dict) -> int | None:
    try:
        return int(datetime.fromisoformat(env["started_utc"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return None


def timestamps(start: int, h) -> list[int]:
    """Each epoch's metric timestamp: the run's start plus the training time up to that epoch
    (MLflow's relative-time axis then reads as training time); the start alone without time_s."""
    if "time_s" not in h:
        return [start] * len(h)
    return [start + int(1000 * s) for s in h["time_s"].fillna(0).cumsum()]


def flatten(table: dict, prefix: str = "") -> dict[str, str]:
    """Nested config tables as MLflow params: `optimizer.lr` -> "0.1"; lists as written."""
    out = {}
    for k, v in table.items():
        name = re.sub(r"[^\w./\- :]", "_", f"{prefix}{k}")  # the characters MLflow allows in a name
        if isinstance(v, dict) and v:
            out |= flatten(v, name + ".")
        elif not isinstance(v, dict):
            out[name] = _param(v)
    return out


def _param(v) -> str:
    return clip(str(v), PARAM_CHARS)


def _numeric(column) -> bool:
    import pandas as pd  # noqa: PLC0415

    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _number(v) -> bool:
    """A value MLflow can chart: a finite number or a bool (tied_with_best: 1 or 0)."""
    try:
        return not isinstance(v, str) and v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) != ""


@contextmanager
def quiet_mlflow():
    """MLflow and alembic announce each database table they create: no news for the user."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
