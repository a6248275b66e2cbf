"""Training: the loop, the tasks it runs (So-VITS GAN, shallow diffusion), their losses,
Orbax checkpoints and the metric writer."""
