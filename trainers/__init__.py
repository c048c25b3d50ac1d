"""Recipes: turn a config into a finished run with `train_and_evaluate(config, workdir, strategy)`."""
