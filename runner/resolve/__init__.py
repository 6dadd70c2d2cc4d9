"""Names and references -> objects, above the engine (a user's code is imported under a
preserved random stream) and below everything that builds with them:

    components   the registries by kind (models, datasets, losses, optimizers, schedulers,
                 transforms): build one, check a name and its arguments, list close matches
    references   `module:attr`, `file.py:Attr` and notebook references: load, call user code,
                 say where it failed
    arguments    a config's arguments against a callable's signature (types, missing, unknown)
    metric_refs  a metric of the user's own, by reference, checked and wrapped as a Metric
    shared_loss  the shared loss object: one for every model, its state checked between steps
    head_losses  a loss per head ([loss.<head>]): the weighted sum, each head's loss per sample
"""
