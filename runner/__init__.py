"""compare's engine: config, registries plumbing, the shared-pass loop, sinks, report, CLI.

    from runner.experiment import Experiment
"""
__version__ = "0.1.0"
