"""The shallow-diffusion networks: the Gaussian schedule, the score network (Unit2Mel) and the
samplers, each a pure function of its parameters."""
