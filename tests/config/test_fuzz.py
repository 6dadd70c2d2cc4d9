"""Fuzzed configs through the real CLI code path: mutations of a tiny digits config (wrong
types, out-of-range numbers, unknown keys, odd names, long strings, non-UTF-8 bytes, broken
TOML, bad sweeps, bad --set overrides, a byte-order mark, deep nesting, and the shapes of issue 24
in `SHAPES`). Each must succeed, or exit 2 with one `error:` line per
problem; never exit 1 ("internal error") and never a traceback. Cases run in this process
through the typer app (`compare run CFG --dry-run`: validate, build every model, one forward);
a few also run as real `compare` subprocesses, which must print and exit the same."""
from __future__ import annotations

import copy
import random
import subprocess
import sys

from compare.config import tomlio
from compare.errors import LINE_CHARS
from tests.helpers import ROOT, cli, digits_config, mlp

SEED = 11
CASES = 320

LONG = "x" * 5000
VALUES = [  # wrong types, out-of-range numbers, odd names and long strings, for any key
    -1, 0, 1, 2, 1.5, -0.5, 1e30, -1e-9, 2**63 - 1, -(2**63), 2**64, -(2**70), float("nan"), float("inf"), True, False,
    "", " ", "..", "a/b", "/abs", "caf\u00e9", "\u00ff" * 10, "1e-3", "yes", "none", "32", LONG, "x" * 300,
    "mlp", "SGD", "digits", "os:path", "math:pi", "no_such.py:Net", "nb.ipynb:Net",
    [], [0], [32, 16], [-1], ["a"], [[1]], [LONG], list(range(200)), {}, {"name": "SGD"}, {"a": 1}, {"name": 3},
]
KEYS = [  # dotted paths into the base config; model[i] are the model tables
    "experiment.name", "experiment.seed", "experiment.seeds", "experiment.epochs", "experiment.device", "experiment.output_dir",
    "experiment.grad_histograms", "experiment.checkpoint_every_steps", "experiment.precision", "experiment.fuse", "experiment.compile",
    "experiment.early_stopping", "experiment.early_stopping.patience", "experiment.early_stopping.metric", "experiment.nope",
    "data.dataset", "data.root", "data.download", "data.batch_size", "data.eval_batch_size", "data.subset", "data.test_subset", "data.num_workers", "data.cache",
    "data.disk_cache", "data.augment", "data.args", "data.args.nope", "data.train_transforms", "data.eval_transforms", "data.nope",
    "loss.name", "loss.args", "loss.args.weight", "loss.args.label_smoothing", "loss.args.reduction", "loss.nope",
    "model[0].name", "model[0].arch", "model[0].args", "model[0].args.hidden", "model[0].args.dropout", "model[0].args.nope",
    "model[0].optimizer", "model[0].optimizer.name", "model[0].optimizer.lr", "model[0].optimizer.momentum",
    "model[0].optimizer.nesterov", "model[0].optimizer.betas", "model[0].optimizer.weight_decay", "model[0].optimizer.nope",
    "model[0].scheduler", "model[0].scheduler.step_size", "model[0].scheduler.gamma", "model[0].scheduler.interval",
    "model[0].seed", "model[0].device", "model[0].early_stopping", "model[0].nope", "model[1].name", "model[1].optimizer.lr",
    "model", "data", "loss", "experiment", "nope",
]
OPTIMIZERS = [{"name": "Adam", "lr": 0.01}, {"name": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True}, {"name": "AdamW"}, {"name": "RMSprop", "lr": 0.01}]
SCHEDULERS = [{"name": "StepLR", "step_size": 1}, {"name": "CosineAnnealingLR", "T_max": 2}, {"name": "OneCycleLR", "max_lr": 0.1, "total_steps": 10}, {"name": "ReduceLROnPlateau"}]
TRANSFORMS = [[{"name": "RandomCrop", "size": 8, "padding": 1}], [{"name": "RandomHorizontalFlip", "p": 0.5}], [{"name": "RandomRotation", "degrees": 10}]]
OVERRIDES = [
    "model.a.optimizer.lr=-1", "model.a.optimizer.lr=0.05", "model.1.lr=3", "model.zz.lr=3", "model.a.args.dropout=1.5",
    "model.a.args.hidden=[8]", "model.a.name=b", "model.a=3", "experiment.epochs=abc", "experiment.epochs=0", "data=3",
    "data.batch_size=[1]", "=3", "noequals", "model.a[x=1].seed=2", "experiment.seed=2", "model.a.sweep={\"optimizer.lr\"=[0.1,0.2]}",
    f"model.a.args.hidden=\"{LONG}\"", "loss.name=MSELoss", "model.a.optimizer={name=\"Adam\",betas=[0.9,2]}",
]


def base() -> dict:
    models = [mlp("a", dropout=0.1) | {"args": {"hidden": [16], "dropout": 0.1}}, mlp("b", lr=0.05) | {"args": {"hidden": [8]}}]
    return digits_config(models, epochs=1, batch_size=32, eval_batch_size=64, subset=64, test_subset=32)


def set_path(raw: dict, key: str, value) -> None:
    """Set a dotted path (`model[0].args.hidden`), creating tables on the way; a non-table on the
    way is replaced, since any shape is a fair mutation."""
    parts = key.replace("[", ".[").split(".")
    table = raw
    for part in parts[:-1]:
        if part.startswith("["):
            models = table if isinstance(table, list) else []
            index = int(part[1:-1])
            if index >= len(models) or not isinstance(models[index], dict):
                return
            table = models[index]
            continue
        if not isinstance(table, dict):
            return
        child = table.get(part)
        if not isinstance(child, (dict, list)):
            child = table[part] = {}
        table = child
    if isinstance(table, dict):
        table[parts[-1]] = value


def to_toml(raw: dict) -> str:
    """tomlio's writer for the table shapes, inline `key = value` for what a mutation left."""
    tables = {k: v for k, v in raw.items() if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(e, dict) for e in v))}
    inline = [f"{tomlio._key(k)} = {tomlio._value(v)}" for k, v in raw.items() if k not in tables]
    return "\n".join(inline) + "\n" + tomlio.dumps(tables)


def mutate(rng: random.Random, raw: dict) -> tuple[bytes, list[str]]:
    """One fuzzed case: the config file's bytes and its --set overrides."""
    overrides: list[str] = []
    kind = rng.choice(["value", "value", "value", "values", "valid", "sweep", "override", "bytes", "truncate", "bom", "nested"])
    if kind in ("value", "values"):
        for _ in range(1 if kind == "value" else rng.randint(2, 5)):
            set_path(raw, rng.choice(KEYS), copy.deepcopy(rng.choice(VALUES)))
    elif kind == "valid":  # real options, so the success path (build, one forward) is fuzzed too
        model = raw["model"][0]
        model["optimizer"] = dict(rng.choice(OPTIMIZERS))
        if rng.random() < 0.5:
            model["scheduler"] = dict(rng.choice(SCHEDULERS))
        if rng.random() < 0.3:
            raw["data"]["train_transforms"] = rng.choice(TRANSFORMS)
        if rng.random() < 0.3:
            set_path(raw, rng.choice(KEYS), copy.deepcopy(rng.choice(VALUES)))
    elif kind == "sweep":
        keys = rng.sample(["optimizer.lr", "args.dropout", "args.hidden", "seed", "name", "optimizer", "args.nope", "arch"], rng.randint(1, 3))
        sweep = {k: rng.choice([[0.1, 0.01], [rng.choice(VALUES)], [], 3, "x", [[8], [16]], list(range(rng.choice([2, 30, 100])))]) for k in keys}
        raw["model"][0]["sweep"] = rng.choice([sweep, sweep, sweep, [], "lr", {}])
    elif kind == "override":
        overrides = rng.sample(OVERRIDES, rng.randint(1, 3))
    data = to_toml(raw).encode()
    if kind == "nested":  # arrays or inline tables in a data key, from harmless to past Python's recursion limit
        data = data.replace(b"[data]\n", b"[data]\n" + rng.choice([b"args", b"nope", b"batch_size"]) + b" = " + nest(rng.choice([2, 32, 33, 500, 2000]), rng.random() < 0.5) + b"\n", 1)
    if kind == "bom":
        data = b"\xef\xbb\xbf" + data
    if kind == "bytes":  # bytes that are not UTF-8, somewhere in the file
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.randint(0x80, 0xFF)]) + data[at:]
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    return data, overrides


def nest(depth: int, tables: bool) -> bytes:
    """`depth` arrays ([[[1]]]) or inline tables ({ a = { a = 1 } }) in each other, as TOML text."""
    return b"{ a = " * depth + b"1" + b" }" * depth if tables else b"[" * depth + b"1" + b"]" * depth


def cases() -> list[tuple[bytes, list[str]]]:
    rng = random.Random(SEED)
    return [mutate(rng, base()) for _ in range(CASES)]


def check(exit_code: int, stdout: str, stderr: str, label: str) -> list[str]:
    """The promise, for one case; returns its error lines."""
    assert "internal error" not in stderr and "Traceback" not in stderr, f"{label}: {stderr}"
    assert exit_code in (0, 2), f"{label}: exit {exit_code}: {stderr}"
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]  # warnings may come too
    if exit_code == 0:
        assert not lines, f"{label}: {stderr}"
        assert "dry run" in stdout
        return []
    assert lines, f"{label}: exit 2 without an error line: {stderr}"
    assert len(set(lines)) == len(lines), f"{label}: a problem reported twice: {stderr}"
    assert all(len(line) <= LINE_CHARS + len("error: ") for line in lines), f"{label}: a line over {LINE_CHARS} characters"
    return lines


def test_fuzzed_configs_exit_2_with_one_line_per_problem_or_succeed(tmp_path):
    outcomes, messages = {0: 0, 2: 0}, set()
    for i, (data, overrides) in enumerate(cases()):
        path = tmp_path / f"case{i}.toml"
        path.write_bytes(data)
        result = cli("run", path, "--dry-run", *[a for o in overrides for a in ("--set", o)])
        assert result.exception is None or isinstance(result.exception, SystemExit), f"case {i}: {result.exception!r}"
        lines = check(result.exit_code, result.stdout, result.stderr, f"case {i} ({path}, --set {overrides})")
        outcomes[result.exit_code] += 1
        messages |= {line.replace(str(path), "CFG") for line in lines}
    print(f"\nfuzz: {CASES} cases (seed {SEED}): {outcomes[0]} succeeded, {outcomes[2]} exited 2; {len(messages)} distinct error lines")
    assert sum(outcomes.values()) == CASES >= 300
    assert outcomes[0] and outcomes[2]  # both paths are exercised


def test_the_compare_command_prints_and_exits_as_the_in_process_cases(tmp_path):
    """Two cases, one that succeeds and one that exits 2 (each subprocess pays for importing torch)."""
    chosen = [(i, case) for i, case in enumerate(cases()) if i in (3, 4)]
    procs = []
    for i, (data, overrides) in chosen:  # started together: the imports overlap
        path = tmp_path / f"case{i}.toml"
        path.write_bytes(data)
        command = [sys.executable, "-m", "compare", "run", str(path), "--dry-run", *[a for o in overrides for a in ("--set", o)]]
        procs.append((path, overrides, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for path, overrides, proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        check(proc.returncode, stdout, stderr, f"{path} --set {overrides}")
        inline = cli("run", path, "--dry-run", *[a for o in overrides for a in ("--set", o)])
        assert (proc.returncode, stderr) == (inline.exit_code, inline.stderr)


def shape(key: str, value) -> bytes:
    raw = base()
    set_path(raw, key, value)
    return to_toml(raw).encode()


# Issue 24: each exited 1 (or, with a BOM, 2) before; (config bytes, arguments, expected exit).
SHAPES = {
    "experiment.name of 300 characters": (shape("experiment.name", "x" * 300), [], 2),
    "args.hidden = [-1] for mlp": (shape("model[0].args.hidden", [-1]), [], 2),
    "batch_size = 2**64": (shape("data.batch_size", 2**64), [], 2),
    "eval_batch_size = 2**63": (shape("data.eval_batch_size", 2**63), [], 2),
    "500 nested arrays": (to_toml(base()).encode().replace(b"[data]\n", b"[data]\nnope = " + nest(500, False) + b"\n"), [], 2),
    "500 nested inline tables": (to_toml(base()).encode().replace(b"[data]\n", b"[data]\nnope = " + nest(500, True) + b"\n"), [], 2),
    "40 nested arrays from --set": (to_toml(base()).encode(), ["--set", "data.args.x=" + nest(40, False).decode()], 2),
    "600 nested arrays from --set": (to_toml(base()).encode(), ["--set", "data.args.x=" + nest(600, False).decode()], 2),
    "a UTF-8 byte-order mark": (b"\xef\xbb\xbf" + to_toml(base()).encode(), [], 0),
    "label_smoothing = -1": (shape("loss.args.label_smoothing", -1), [], 2),
    "label_smoothing = -inf": (shape("loss.args.label_smoothing", float("-inf")), [], 2),
    "label_smoothing = nan": (shape("loss.args.label_smoothing", float("nan")), [], 2),
    "label_smoothing = 1.5": (shape("loss.args.label_smoothing", 1.5), [], 2),
    "label_smoothing = 0.1": (shape("loss.args.label_smoothing", 0.1), [], 0),
    "--seeds 0,,1": (to_toml(base()).encode(), ["--seeds", "0,,1"], 2),
    "--seeds 0,1,": (to_toml(base()).encode(), ["--seeds", "0,1,"], 2),
}


def test_the_shapes_that_exited_1_exit_2_with_short_lines(tmp_path):
    for label, (data, args, expected) in SHAPES.items():
        path = tmp_path / "case.toml"
        path.write_bytes(data)
        result = cli("run", path, "--dry-run", *args)
        lines = check(result.exit_code, result.stdout, result.stderr, label)
        assert result.exit_code == expected, f"{label}: exit {result.exit_code}: {result.stderr}"
        assert all(len(line) <= 300 for line in lines), f"{label}: {lines}"
        if expected == 2:
            assert len(lines) == 1, f"{label}: {lines}"
