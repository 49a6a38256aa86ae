"""`rbmnet_benchmark`: the baselines and RBM pretraining over training fractions and folds (the paper's
Table 2), optionally under label noise: which cells to train (grid), the table (table), the plot (plot)."""
