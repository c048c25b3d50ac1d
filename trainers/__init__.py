"""Recipes: a config becomes a finished run (`train_and_evaluate(config, workdir, strategy)`)."""
