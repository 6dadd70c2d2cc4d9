"""References: what `arch`, `data.dataset` and `loss.name` may name besides a registry entry.

    package.module:attr          an importable module (installed, or under the working directory)
    path/to/file.py:Attr         a Python file, relative to the experiment's TOML file
    path/to/notebook.ipynb:Attr  a Jupyter notebook: its code cells, converted by nbconvert's
                                 PythonExporter (`jupyter nbconvert --to script`), run as a module

Files and notebooks run as modules whose __name__ is not "__main__". In a notebook:
  - cells tagged `skip-compare` are dropped (tag the cells that load data, train, plot, save);
  - a cell that starts with a cell magic (`%%time`, `%%bash`, ...) is dropped;
  - IPython line magics and shell lines (`%matplotlib inline`, `!pip install x`, `x = !ls`)
    become no-ops, and so does any `get_ipython()` call;
  - of the rest, only imports, definitions (def, class) and assignments of constants run:
    loading a model never trains one (a top-level `train(model)`, `torch.save(...)` or loop is
    left out), and one `note:` line names the cells that had code left out.
A `.py` file runs whole, as `import` would run it (guard scripts with `if __name__ == "__main__":`).
Its folder goes first on sys.path, as `python net.py` puts it there, and stays there: `from
layers import block` finds the sibling layers.py, also from inside a function. Two referenced
folders may each hold a layers.py: each file's top-level imports get its own (the other
folder's is dropped from sys.modules before the file runs).

Each file runs once per process (cached by path, size and modification time), so the config
check and the builders see the same classes. Its top level runs with the torch, random and
numpy generators saved and restored: a `torch.manual_seed(0)` there moves no model's stream.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import importlib
import linecache
import os
import re
import sys
import traceback
import types
import warnings
from pathlib import Path
from typing import Any, Callable

from compare.engine.rng import preserved_rng
from compare.errors import CompareError, CompareNote, ReferenceNotFound, UserCodeError, describe, did_you_mean, one_line

SKIP_TAG = "skip-compare"
FORMS = "package.module:attr, path/to/file.py:Attr or path/to/notebook.ipynb:Attr"
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# IPython-only lines: `%magic`, `!shell`, `x = !ls`, `x = %who`, `obj?`, `?obj`.
_IPYTHON_LINE = re.compile(r"^(\s*)(?:[%!]|[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*[%!]|\?+[\w.]+\s*$|[\w.]+\?+\s*$)")
_CELL_MARK = "# [compare] code cell "

_MODULES: dict[tuple, types.ModuleType] = {}  # (resolved path, size, mtime) -> module
_LOCATORS: dict[str, Callable[[int], str]] = {}  # filename -> (line -> "where, for a person")
_FOLDERS: set[str] = set()  # folders of referenced files, put on sys.path


def is_reference(value: Any) -> bool:
    """`a.b:c`, `x.py:C`, `nb.ipynb:C` (registry names never hold a colon)."""
    return isinstance(value, str) and ":" in value


def resolve(text: str, base_dir: str | Path = ".") -> Any:
    """The object `text` names. Raises ReferenceNotFound / UserCodeError with file and attribute."""
    target, _, attr = text.rpartition(":")
    if not target or not _DOTTED.match(attr):
        raise ReferenceNotFound(f"{text!r} is not a reference; expected {FORMS}")
    module, shown = load(target, base_dir)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = defined_names(module)
            listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            guess = did_you_mean(part, names) if len(names) > 20 else ""  # a short list speaks for itself
            raise ReferenceNotFound(f"{shown} has no attribute {attr!r}{guess}; it defines: {listed or 'nothing usable'}")
        obj = getattr(obj, part)
    return obj


def defined_names(module: types.ModuleType) -> list[str]:
    """Classes and functions the module itself defines, in definition order (else its public names)."""
    public = {k: v for k, v in vars(module).items() if not k.startswith("_")}
    own = [k for k, v in public.items() if callable(v) and getattr(v, "__module__", None) == module.__name__]
    return own or [k for k, v in public.items() if not isinstance(v, types.ModuleType)]


def load(target: str, base_dir: str | Path = ".") -> tuple[types.ModuleType, str]:
    """(module, how to name it in messages) for `path.py`, `path.ipynb` or `package.module`."""
    if not target.endswith((".py", ".ipynb")):
        return _import(target), target
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    shown = os.path.normpath(path)
    if not path.is_file():
        raise ReferenceNotFound(f"{shown}: no such file (a relative path starts at the experiment file's folder, {os.path.normpath(base_dir)})")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MODULES:
        run = _run_notebook if path.suffix == ".ipynb" else _run_file
        _MODULES[key] = run(path, shown)
    return _MODULES[key], shown


def _import(name: str) -> types.ModuleType:
    if not _DOTTED.match(name):
        raise ReferenceNotFound(f"{name!r} is neither a module name nor a .py/.ipynb file; expected {FORMS}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # the `compare` script does not put the working directory there
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            raise ReferenceNotFound(f"cannot import module {name!r}: {err}; use path/to/file.py:Attr for a file of your own") from None
        raise UserCodeError(f"importing {name!r} failed: {one_line(err)}{located(err)}") from err
    except Exception as err:  # noqa: BLE001 - the user's module raised while importing
        if (moved := old_import(err)) is not None:
            raise UserCodeError(f"importing {name!r}{located(err)}: {moved}") from err
        raise UserCodeError(f"importing {name!r} failed: {one_line(err)}{located(err)}") from err


# ---------------------------------------------------------------- files and notebooks


OUR_PACKAGES = ("datasets", "models")  # installed as compare.datasets and compare.models (pyproject.toml)


def old_import(err: BaseException) -> str | None:
    """The line for a user file that still imports compare's adapter or model registry by the
    old top-level names (`from datasets import DatasetAdapter`): they install under `compare` now,
    and `datasets` may be Hugging Face's. None for any other error."""
    if not isinstance(err, ImportError) or (err.name or "").partition(".")[0] not in OUR_PACKAGES:
        return None
    if not isinstance(err, ModuleNotFoundError) and "cannot import name" not in str(err):
        return None
    line = next((f.line for f in reversed(traceback.extract_tb(err.__traceback__)) if f.line and re.match(r"(from|import)\s", f.line)), "")
    found = re.match(r"from\s+([\w.]+)\s+import\s+(.+)", line or "")
    if found and found.group(1).partition(".")[0] in OUR_PACKAGES:
        old, new = found.group(0).strip(), f"from compare.{found.group(1)} import {found.group(2).strip()}"
    else:
        what = re.search(r"cannot import name '(\w+)'", str(err))
        old = f"from {err.name} import {what.group(1) if what else '...'}"
        new = "from compare." + old.removeprefix("from ")
    return (f"`{old}` is compare's old import name; write `{new}` "
            f"(compare installs under one `compare` namespace, so that Hugging Face's `{err.name.partition('.')[0]}` can be installed beside it)")


def _run_file(path: Path, shown: str) -> types.ModuleType:
    return _execute(path, shown, path.read_text(encoding="utf-8"), lambda line: f"{shown}:{line}", notebook=False)


def notebook_script(path: Path, shown: str) -> tuple[str, set[int]]:
    """The notebook as nbconvert's PythonExporter writes it, after the convention above (each
    kept code cell starts with a `# [compare] code cell N` marker line), and the numbers of the
    cells dropped for their cell magic."""
    import nbformat  # noqa: PLC0415 - only when a notebook is referenced
    from nbconvert import PythonExporter  # noqa: PLC0415

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001 - any unreadable notebook is bad input
        raise ReferenceNotFound(f"{shown}: not a readable notebook ({one_line(err)})") from None
    cells, number, magic = [], 0, set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        number += 1
        source = cell.source
        if source.lstrip().startswith("%%") and SKIP_TAG not in cell.metadata.get("tags", []):
            magic.add(number)
        if SKIP_TAG in cell.metadata.get("tags", []) or source.lstrip().startswith("%%"):
            continue
        cell = copy.deepcopy(cell)
        cell.source = f"{_CELL_MARK}{number}\n{neutralise(source)}"
        cells.append(cell)
    nb.cells = cells
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "IPython is needed to transform IPython syntax": done above
        script, _ = PythonExporter().from_notebook_node(nb)
    return script, magic


def neutralise(source: str) -> str:
    """IPython-only lines become `pass` (same indent); a cell that is valid Python is untouched."""
    try:
        ast.parse(source)
        return source
    except SyntaxError:
        pass
    out = []
    for line in source.splitlines():
        match = _IPYTHON_LINE.match(line)
        out.append(f"{match.group(1)}pass  # [compare] IPython line skipped: {line.strip()}" if match else line)
    return "\n".join(out)


def _run_notebook(path: Path, shown: str) -> types.ModuleType:
    script, cut = notebook_script(path, shown)
    marks = [(i, int(line[len(_CELL_MARK):])) for i, line in enumerate(script.splitlines(), 1) if line.startswith(_CELL_MARK)]

    def locate(line: int) -> str:
        starts = [(start, cell) for start, cell in marks if start <= line]
        if not starts:
            return f"{shown} (converted script) line {line}"
        start, cell = starts[-1]
        return f"{shown} code cell {cell}, line {line - start}"

    def cell(line: int) -> int:
        return max((c for start, c in marks if start <= line), default=0)

    def keep(tree: ast.Module) -> None:
        tree.body, left_out = definitions_only(tree.body)
        cells = sorted({cell(stmt.lineno) for stmt in left_out} | cut)
        if cells:
            warnings.warn(
                f"{shown}: ran only its imports, definitions and constant assignments; left out the other code of "
                f"code cell{'s' if len(cells) > 1 else ''} {', '.join(map(str, cells))} (calls and loops do not run: nothing is trained or saved)",
                CompareNote, stacklevel=2)

    return _execute(path, shown, script, locate, notebook=True, keep=keep)


class _NoIPython:
    """What `get_ipython()` returns outside IPython: every method is a no-op."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _execute(path: Path, shown: str, source: str, locate: Callable[[int], str], notebook: bool, keep: Callable[[ast.Module], None] | None = None) -> types.ModuleType:
    """Run `source` as a module; `keep` filters its parsed statements first (the notebook filter)."""
    filename = str(path)
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as err:
        raise UserCodeError(f"{locate(err.lineno or 0)}: SyntaxError: {err.msg}") from None
    if keep is not None:
        keep(tree)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    # A flat, importable-looking name: pickle (DataLoader workers, torch.save) finds the module in sys.modules.
    name = f"compare_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    module = types.ModuleType(name)
    module.__file__ = filename
    module.get_ipython = _NoIPython
    sys.modules[name] = module  # before running: dataclasses and typing look the module up
    importable_folder(path)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # --debug tracebacks
    _LOCATORS[filename] = locate
    try:
        with preserved_rng():
            exec(compile(tree, filename, "exec"), module.__dict__)  # noqa: S102 - running the user's file is the point
    except (Exception, SystemExit) as err:  # noqa: BLE001
        del sys.modules[name]
        if (moved := old_import(err)) is not None:
            raise UserCodeError(f"{shown}{located(err)}: {moved}") from err
        hint = "; if that cell loads data, tag it skip-compare" if notebook else ""
        raise UserCodeError(f"running {shown} failed: {type(err).__name__}: {one_line(err)}{located(err)}{hint}") from err
    return module


def importable_folder(path: Path) -> None:
    """`path`'s folder first on sys.path (`python net.py` does the same), so its sibling modules
    import. A module of the same top-level name imported from another referenced folder is
    forgotten first: each project gets its own layers.py. Nothing else in sys.modules moves."""
    folder = str(path.parent.resolve())
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    others = _FOLDERS - {folder}
    _FOLDERS.add(folder)
    clashing = set()
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if "." in name or not file:
            continue
        home = os.path.dirname(os.path.dirname(file) if hasattr(mod, "__path__") else file)  # the folder it was found in
        if home in others and (os.path.exists(os.path.join(folder, name + ".py")) or os.path.isdir(os.path.join(folder, name))):
            clashing.add(name)
    for name in [n for n in sys.modules if n.partition(".")[0] in clashing]:
        del sys.modules[name]


def definitions_only(body: list[ast.stmt]) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(kept, left out): imports, def/class, assignments of constants (and `if`/`try` blocks
    made only of those) are kept; calls, loops and every other statement are left out."""
    kept, left_out = [], []
    for stmt in body:
        (kept if _definition(stmt) else left_out).append(stmt)
    return kept, left_out


def _definition(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)):
        return True
    if isinstance(stmt, ast.Assign):
        return all(_plain_target(t) for t in stmt.targets) and _constant(stmt.value)
    if isinstance(stmt, ast.AnnAssign):
        return _plain_target(stmt.target) and (stmt.value is None or _constant(stmt.value))
    if isinstance(stmt, ast.Expr):  # a docstring, a bare name
        return isinstance(stmt.value, (ast.Constant, ast.Name))
    if isinstance(stmt, ast.If):
        return _constant(stmt.test) and all(map(_definition, stmt.body + stmt.orelse))
    if isinstance(stmt, ast.Try):  # try: import timm / except ImportError: timm = None
        handlers = [s for h in stmt.handlers for s in h.body]
        return all(map(_definition, stmt.body + handlers + stmt.orelse + stmt.finalbody))
    return False


def _plain_target(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) or (isinstance(node, (ast.Tuple, ast.List)) and all(map(_plain_target, node.elts)))


def _constant(node: ast.expr | None) -> bool:
    """An expression that calls nothing: literals, names, attributes, operators, containers, lambdas."""
    if node is None or isinstance(node, (ast.Constant, ast.Name, ast.Lambda)):
        return True
    if isinstance(node, ast.Attribute):
        return _constant(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(map(_constant, node.elts))
    if isinstance(node, ast.Dict):
        return all(map(_constant, node.keys + node.values))
    if isinstance(node, ast.UnaryOp):
        return _constant(node.operand)
    if isinstance(node, ast.BinOp):
        return _constant(node.left) and _constant(node.right)
    if isinstance(node, ast.BoolOp):
        return all(map(_constant, node.values))
    if isinstance(node, ast.Compare):
        return all(map(_constant, [node.left, *node.comparators]))
    if isinstance(node, ast.Subscript):
        return _constant(node.value) and _constant(node.slice)
    if isinstance(node, ast.Slice):
        return all(map(_constant, (node.lower, node.upper, node.step)))
    return False


# ---------------------------------------------------------------- calling the user's code


def call_user(what: str, fn: Callable, *args, **kwargs) -> Any:
    """Call user code; what it raises becomes one UserCodeError line naming `what` and where."""
    try:
        return fn(*args, **kwargs)
    except CompareError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's code: report it, do not crash
        raise UserCodeError(f"{what} raised {type(err).__name__}: {one_line(err)}{located(err)}") from err


# Frames in these are not "where the user's code failed".
_ROOT = Path(__file__).resolve().parents[2]
_LIBRARY_DIRS = (os.path.dirname(os.__file__), *(str(_ROOT / p) for p in ("runner", "models", "datasets")))


def located(err: BaseException) -> str:
    """` (file:line)` of the innermost frame in the user's code, or "" when none is found."""
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        if frame.filename in _LOCATORS:
            return f" ({_LOCATORS[frame.filename](frame.lineno)})"
    for frame in reversed(frames):
        name = frame.filename
        if not name.startswith("<") and "site-packages" not in name and not name.startswith(_LIBRARY_DIRS):
            return f" ({name}:{frame.lineno})"
    return ""
