"""The train log (runner/engine/step_log.py) counts a step's hits exactly whatever the dtype of
its loss and gradient norms (a model kept in bfloat16 under precision "32")."""
from __future__ import annotations

import torch

from compare.engine.step_log import StepLog


def test_hits_stay_exact_beside_bfloat16_losses_and_norms():
    log = StepLog()
    for step, size in enumerate((1000, 1000, 333)):  # a short last batch too
        targets = torch.zeros(size, dtype=torch.long)
        targets[:1] = 1  # one miss per step
        log.record(torch.tensor(1.5, dtype=torch.bfloat16), torch.zeros(size, dtype=torch.long), targets, [torch.tensor(2.0, dtype=torch.bfloat16)], size, step, summed=False)
    loss_sum, hits, seen = log.host_totals()
    assert (hits, seen) == (2330, 2333)
    assert loss_sum == 1.5 * 2333
