"""Quarantine: a model that diverges, raises, runs out of memory, or whose own code calls
sys.exit, raises KeyboardInterrupt or another BaseException leaves the pass alone; the others
finish bitwise as without it. A model non-finite only in evaluation has diverged. One mixed run
holds every kind of bad model (each is quarantined on its own, so they cannot mask each other)."""
from __future__ import annotations

import pandas as pd

from tests.helpers import explodes, history, killable, launch, write_config

BAD = {  # model -> (ExplodesAfter mode, status, what its error file names)
    "diverges": ("nan", "diverged", "non-finite loss or gradient norm"),
    "raises": ("raise", "failed", "boom from ExplodesAfter"),
    "oom": ("oom", "failed", "OutOfMemoryError"),
    "exit0": ("exit0", "failed", "SystemExit: 0"),
    "exit7": ("exit7", "failed", "SystemExit: 7"),
    "ctrl_c": ("keyboard", "failed", "KeyboardInterrupt: raised by the model"),
    "base": ("base", "failed", "ModelsOwnBaseException: raised by the model"),
    "nan_eval": ("nan_eval", "diverged", "non-finite test loss"),
}


def test_every_kind_of_bad_model_is_quarantined_and_the_others_finish_bitwise(tmp_path):
    healthy = [killable("a"), killable("c", seed=9)]
    alone = launch("run", write_config(tmp_path, healthy, epochs=2), "--out", tmp_path / "alone", "-q", "--no-plots")
    assert alone.returncode == 0, alone.stderr
    bad = [explodes(name, mode) for name, (mode, _, _) in BAD.items()]
    proc = launch("run", write_config(tmp_path, [healthy[0], *bad, healthy[1]], epochs=2), "--out", tmp_path / "mixed", "-q", "--no-plots")
    assert proc.returncode == 3, proc.stderr  # finished, some models failed: not 0, not 7, not 130
    assert "Traceback" not in proc.stderr and "interrupted" not in proc.stderr
    mixed, reference = history(tmp_path / "mixed"), history(tmp_path / "alone")
    for name in ("a", "c"):
        ours = mixed.query("model == @name").reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, reference.query("model == @name").reset_index(drop=True), check_exact=True)
    board = pd.read_csv(tmp_path / "mixed" / "leaderboard.csv").set_index("model")
    assert (board.loc[["a", "c"], "status"] == "done").all()
    for name, (_, status, named) in BAD.items():
        where = "epoch 1 evaluation" if name == "nan_eval" else "epoch 1 step 3"
        assert (board.loc[name, "status"], board.loc[name, "stopped_at"]) == (status, where), name
        error = (tmp_path / "mixed" / "errors" / f"{name}.txt").read_text()
        assert error.startswith(f"{status} at {where}") and named in error, name
