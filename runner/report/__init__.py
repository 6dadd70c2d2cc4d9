"""Reports read from a run directory only: run_data (reading it), leaderboard, statistics,
formats (terminal, csv, md, latex), plots (seaborn), TensorBoard comparison views, finalize."""
