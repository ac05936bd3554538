"""The offline side of ranking: learned vectors, training examples and fitting, evaluation against baselines
(popularity, ALS, EASE, item-kNN, GRU4Rec), ranking metrics. Used by the CLI and benchmarks, never by a serving process."""
