"""compare's engine: config, registries plumbing, the shared-pass loop, sinks, report, CLI.

    from compare import Experiment
    result = Experiment.from_toml("experiments/digits.toml").run()   # or Experiment({...dict...})
    result.leaderboard, result.run_dir
"""
__version__ = "0.1.0"
__all__ = ["Experiment", "RunResult"]


def __getattr__(name: str):
    # Imported on first use: `compare --help` (which imports this package) stays free of torch.
    if name in __all__:
        from compare.run import experiment  # noqa: PLC0415

        return getattr(experiment, name)
    raise AttributeError(f"module 'compare' has no attribute {name!r}")
