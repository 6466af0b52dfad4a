"""Training on real data (``hyperzzw train``): data, schedule, checkpoints, plots, the loop."""
