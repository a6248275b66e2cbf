"""Running models on devices: the shared runner (buckets, rows, sharding, compiled programs),
the user-facing entry points built on it (SoVITS, shallow diffusion, vocoder, content
encoder, enhancer) and the file-to-file converter."""
