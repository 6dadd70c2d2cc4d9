"""One probing forward pass per model: FLOPs per sample (torch.utils.flop_counter counts
matmuls and convolutions) and the output shape, checked against the dataset's labels.

The probe feeds a real sample (the first of the test split, through the eval pipeline and the
run's collate), so a model that takes token ids gets integer ids, not float zeros."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from compare import nested
from compare.engine import calling
from compare.resolve.references import call_user
from compare.engine.rng import preserved_rng
from compare.metrics.outputs import extra_outputs
from compare.metrics.heads import sample_shape


def probe_batch(data) -> torch.Tensor:
    """A batch of one: the test split's first sample as the model receives it, in its dtype.
    The test split runs the eval pipeline (nothing random); no random stream moves anyway."""
    return probe_samples(data, 1)[0]


def probe_samples(data, n: int) -> tuple:
    """(x, y): the test split's first `n` samples (fewer where it holds fewer), collated as the
    run collates them (the decoded cache: through its batch pipeline)."""
    with preserved_rng():
        if hasattr(data.test, "pipeline"):  # the decoded cache: its batch pipeline makes the input
            return data.test.finish(nested.take(data.test.images, slice(0, n))), nested.take(data.test.labels, slice(0, n))
        own = getattr(data, "collate_fn", None)
        items = [data.test[i] for i in range(min(n, len(data.test)))]
        return default_collate(items) if own is None else call_user("the collate function", own, items)


def probe_forward(model: nn.Module, sample: Any, device: torch.device, output_key: str | None = None, spread: bool = False) -> tuple[int | None, tuple[int, ...], str | None, int]:
    """`sample` (a batch of one, any nested structure; a shape: zeros of it) through the model
    (`model(**sample)` where `spread`: runner/engine/calling.py) in eval mode (BatchNorm
    needs no batch statistics, dropout draws nothing), then the train/eval flags are put back.
    Returns (forward FLOPs per sample or None, output shape of one sample, why FLOPs are None,
    how many tensors the eval-mode output holds beside the prediction)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    sample = torch.zeros(1, *sample) if isinstance(sample, (tuple, list)) and all(isinstance(s, int) for s in sample) else sample
    sample = nested.to(sample, device)
    why = None
    try:
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                out = calling.call(model, sample, spread)
            flops = int(counter.get_total_flops()) // nested.batch_size(sample)
        except Exception as err:  # noqa: BLE001 - the counter's own limits never refuse a model: FLOPs unknown
            with torch.no_grad():
                out = calling.call(model, sample, spread)
            flops, why = None, f"{type(err).__name__}: {' '.join(str(err).split())[:160] or '(no message)'}"
    finally:
        for module, training in modes.items():
            module.training = training
    return flops, sample_shape(out, output_key), why, extra_outputs(out)  # with each head's shape (runner/metrics/heads.py)
