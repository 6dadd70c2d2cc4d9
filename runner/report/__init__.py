"""Reports read from a run directory only:
- run_data: reading a run directory (and shards of one) into a RunData
- leaderboard: one row per model, best first, with its evidence
- verdict: any metric's values, interval and paired test against the best (the tests: runner/metrics)
- stats: descriptive summaries (the Pareto front, the confusion matrix)
- per_class: per-class precision, recall and F1, the most-confused pairs (per-label F1 and AP
  for multi-label, per-output errors for a regression)
- families: the family verdict of tuned families (`--by family`)
- tuning: the tuning-curve estimators behind it
- across: verdicts across datasets (ranks, Friedman, Nemenyi, Wilcoxon)
- formats: terminal, CSV, Markdown and LaTeX renderings
- figure_kit: what every plot shares (colours, layout, the seeds note)
- plots: the run's plots (seaborn)
- task_plots: plots of one task (calibration, regression, per-class F1, confused pairs)
- confusion_plots: the confusion matrices (the plot and TensorBoard's image)
- tuning_plot: the tuning curves' plot
- cd_plot: the critical-difference diagram
- tb_views: TensorBoard comparison views
- finalize: the end of a run, where the reports touch the disk"""
