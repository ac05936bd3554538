"""The parameter server: user and item embeddings, moved in real time by interactions."""
