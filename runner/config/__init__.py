"""The experiment config: schema (dataclasses, `load_config`, `config_from_dict`), validation
of every problem at once, `--set` overrides, sweeps, TOML writing, and `compare init` templates."""
