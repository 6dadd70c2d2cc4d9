"""The experiment config as data, at the bottom with the metrics: nothing here imports a
registry, the data, the engine or the report (validation against them is runner/assemble/validate.py).

    schema     the dataclasses: every key, its default and unit
    seeds      a model's seed from (experiment seed, model name)
    overrides  `--set key=value` applied to the raw TOML
    sweeps     grids and searches expanded into one model per point
    search     `search = {space, trials, sampler}`: seeded points of a space
    tomlio     TOML writing (config.toml in a run)
    templates  `compare init` templates
"""
