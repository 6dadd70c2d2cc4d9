"""Metrics, one concern with one home: what a model's output means (`outputs`), which task the
data and loss pose and what evaluation keeps per sample (`tasks`), every built-in metric with
its statistics, direction and paired-test family (`builtin`), and the resampling behind the
intervals and paired tests of any metric (`paired`). docs/metrics.md is the reference."""
