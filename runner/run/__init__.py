"""Running an experiment: the seed loop (experiment), one seed's shared pass, checkpoints, the
run directory and its lock, sinks (history.csv, TensorBoard), torchrun, signals, dry run, progress."""
