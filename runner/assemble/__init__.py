"""Names and references -> objects: registries and `module:attr` / file / notebook references
(components, references), the slot factory (slots, fusing), and one-sample probes (FLOPs,
output shape, shared-loss state, data/model fit)."""
