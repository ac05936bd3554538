"""The ranker: candidate retrieval, feature assembly and model scoring."""
