"""Timbre-leakage controls: the k-means cluster model and the feature-retrieval index, their
training from a built corpus, and their use at conversion time."""
