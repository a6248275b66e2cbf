"""The one check of diffusion depths (``check_k_step``), as the sampler, the runtime, the
converter's options and the diffusion config import use it."""

import pytest

from svcjax.models.diffusion.gaussian import check_k_step


def test_accepts_and_returns_whole_steps():
    assert check_k_step(None) is None
    assert check_k_step(100) == 100
    assert check_k_step(100.0, timesteps=1000) == 100
    assert check_k_step(1000, timesteps=1000, k_step_max=0) == 1000      # 0: trained on all
    assert check_k_step(50, timesteps=1000, k_step_max=50) == 50
    assert check_k_step(timesteps=1000, k_step_max=1000) is None


@pytest.mark.parametrize("kw, msg", [
    (dict(k_step=0), r"^k_step must be >= 1, got 0$"),
    (dict(k_step=-3, timesteps=1000), r"^k_step must be >= 1, got -3$"),
    (dict(k_step=1001, timesteps=1000), r"^k_step must be in \[1, 1000\], got 1001$"),
    (dict(k_step=2.5), r"^k_step must be a whole number of steps, got 2\.5$"),
    (dict(k_step="many"), r"^k_step must be a whole number of steps, got 'many'$"),
    (dict(k_step=60, timesteps=1000, k_step_max=50),
     r"^the shallow diffusion k_step=60 is greater than this model's k_step_max=50$"),
    (dict(timesteps=1000, k_step_max=2000, where="m.yaml: "),
     r"^m\.yaml: model\.k_step_max=2000 must be in \[0, timesteps=1000\]$"),
    (dict(timesteps=1000, k_step_max=-1), r"k_step_max=-1 must be in \[0, timesteps=1000\]"),
])
def test_one_sentence_for_what_is_wrong(kw, msg):
    with pytest.raises(ValueError, match=msg):
        check_k_step(**kw)


def test_every_caller_uses_it():
    """The sampler plan, the converter's options and the config import say the same."""
    from svcjax.interop.diffusion import config_from_yaml
    from svcjax.models.diffusion import sampling
    from svcjax.runtime.converter import ConvertOptions

    with pytest.raises(ValueError, match=r"k_step must be in \[1, 1000\], got 1001"):
        sampling.check("ddim", 1001, 10, 1000)
    with pytest.raises(ValueError, match=r"^k_step must be >= 1, got 0$"):
        ConvertOptions(k_step=0).check()
    with pytest.raises(ValueError, match=r"^c\.yaml: model\.k_step_max=5 must be in "):
        config_from_yaml({"model": {"timesteps": 4, "k_step_max": 5, "n_layers": 2,
                                    "n_chans": 8, "n_hidden": 8, "n_spk": 1},
                          "data": {"encoder_out_channels": 16}}, "c.yaml")
