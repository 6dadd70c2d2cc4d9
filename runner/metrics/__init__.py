"""Metrics, the bottom floor of what a comparison means (docs/metrics.md is the reference):
- outputs: what a model's output means (the tensor the metrics read from it)
- heads: several heads (dict/tuple targets and outputs): each head's task, statistics under
  `<head>/`, metrics named `<head>/<metric>`
- tasks: which task the data and loss pose, and what evaluation keeps per sample
- dense: dense targets (segmentation): the per-image, per-class pixel counts evaluation keeps,
  and pixel accuracy, mean accuracy, mIoU, Dice and per-class IoU from them
- builtin: every built-in metric with its statistics, paired-test family and direction (THE
  direction rule, `higher_is_better`), and the headline metric's name (`HEADLINE`, `split_column`)
- own: a metric of the user's own, called and its results checked (a bad one is one line, exit 2)
- selection: which val metric a best epoch is chosen on (engine and report share it)
- significance: every paired test and interval, once (McNemar, sign flips, the paired
  bootstrap, Holm; t, Wilson, percentile intervals; which seeds pair)
- power: how much a verdict resolves (power, the MDE, seeds needed)"""
