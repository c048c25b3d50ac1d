"""absl entry points: `python -m launch.train`, `evaluate`, `predict`, `export`, `benchmark`."""
