"""A model's own code cannot end the pass: sys.exit, KeyboardInterrupt and other
BaseExceptions raised inside its step quarantine that model only, the others finish bitwise
as without it, and a model that goes non-finite only in evaluation has diverged."""
from __future__ import annotations

import pandas as pd

from tests.helpers import explodes, history, killable, launch, write_config

BAD = {  # model -> (mode, status, what its error file names)
    "exit0": ("exit0", "failed", "SystemExit: 0"),
    "exit7": ("exit7", "failed", "SystemExit: 7"),
    "ctrl_c": ("keyboard", "failed", "KeyboardInterrupt: raised by the model"),
    "base": ("base", "failed", "ModelsOwnBaseException: raised by the model"),
    "nan_eval": ("nan_eval", "diverged", "non-finite"),
}


def test_a_model_that_exits_or_interrupts_is_quarantined_and_the_others_finish_bitwise(tmp_path):
    healthy = [killable("a"), killable("c", seed=9)]
    alone = launch("run", write_config(tmp_path, healthy, epochs=2), "--out", tmp_path / "alone", "-q", "--no-plots")
    assert alone.returncode == 0, alone.stderr
    bad = [explodes(name, mode) for name, (mode, _, _) in BAD.items()]
    mixed_config = write_config(tmp_path, [healthy[0], *bad, healthy[1]], epochs=2)
    proc = launch("run", mixed_config, "--out", tmp_path / "mixed", "-q", "--no-plots")
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
        assert named in (tmp_path / "mixed" / "errors" / f"{name}.txt").read_text(), name
