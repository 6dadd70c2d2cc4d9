"""The loop (`train_one_epoch`, `evaluate`) and what it steps: Slot and its kinds (fused group,
DDP slot), numerics (precision, layout, compile), random streams, timers, early stopping."""
