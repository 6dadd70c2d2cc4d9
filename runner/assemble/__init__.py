"""The slot factory and config validation: the floor that needs every registry, the data and
the engine at once (a config is checked against what it names; a slot is built from all three).

    validate   TOML or a dict -> `--set` overrides -> sweeps -> a typed, checked Config
               (`load_config`, `config_from_dict`), every problem at once
    slots      one model's Slot: its stream, model, optimizer, scheduler, probes, device
    fusing     which models form a fused group, and the group's slots
    finetune   `init`, `freeze`, `param_groups`, pretrained weights offline
    recipe     `no_decay` groups, warmup and "linear"/"cosine" schedulers, accumulate and clipping keys
    flops      FLOPs per sample, measured on one probe batch
    preflight  one real sample through the data and every model before training
"""
