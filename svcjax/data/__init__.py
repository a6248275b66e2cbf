"""Training data: the corpus builder (audio folders -> TFDS ArrayRecord), the jitted
per-clip featurizer, and the grain input pipeline that reads the corpus back."""
