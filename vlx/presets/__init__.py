"""Config building blocks that `configs/*.py` compose: literature model sizes, the loop's
defaults, dataset sections and smoke shrinking. The decisions of a recipe (objective, pooling,
steps, batch, learning rate) stay in its config file, where a reader looks for them."""
