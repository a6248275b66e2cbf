"""svcjax.models.scan: the unroll choice is an argument (a module field), never ambient state.

Only jaxprs are made here (nothing is compiled): the scanned layer stacks of the generator
carry ``unroll=1`` (compact) or ``unroll=n_layers`` (unrolled), as the module's
``unroll_layers`` field says, whatever context the trace runs in.
"""

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.models import scan, synthesizer, wavenet


def _scan_unrolls(jaxpr) -> list[tuple[int, int]]:
    """(length, unroll) of every scan in a closed jaxpr, nested ones included."""
    out = []

    def walk(j):
        for eqn in j.eqns:
            if eqn.primitive.name == "scan":
                out.append((int(eqn.params["length"]), int(eqn.params["unroll"])))
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (list, tuple)) else [v]):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jaxpr.jaxpr)
    return out


def test_scan_layers_unrolls_only_when_asked():
    wn = wavenet.WN(8, 3, 1, 4)
    x = jnp.ones((1, 12, 8))
    mask = jnp.ones((1, 12))
    params = wn.init(jax.random.PRNGKey(0), x, mask)["params"]
    scanned = jax.make_jaxpr(lambda p: wn.apply({"params": p}, x, mask))(params)
    unrolled_wn = wn.clone(unroll_layers=True)
    unrolled = jax.make_jaxpr(lambda p: unrolled_wn.apply({"params": p}, x, mask))(params)
    # WN scans all but its last layer: 3 of 4
    assert _scan_unrolls(scanned) == [(3, 1)]
    assert _scan_unrolls(unrolled) == [(3, 3)]
    a = wn.apply({"params": params}, x, mask)
    b = unrolled_wn.apply({"params": params}, x, mask)
    # the same arithmetic in the same order: equal up to XLA's fusion choices (float32)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert "unrolled" not in dir(scan)          # no ambient switch left to read


def test_generator_passes_unroll_layers_to_every_stack():
    from configs import sovits_44k

    cfg = sovits_44k.get_config("variant=test")
    g = synthesizer.from_config(cfg, with_posterior=True)
    gu = synthesizer.from_config(cfg, with_posterior=True, unroll_layers=True)
    assert g != gu and hash(g) != hash(gu)      # part of any cache key the module is in
    params = synthesizer.init_params(g, shapes_only=True)
    t = 16
    args = (jnp.zeros((1, t, int(cfg.model.ssl_dim))), jnp.full((1, t), 200.0),
            jnp.ones((1, t)), jnp.zeros((1,), jnp.int32), jnp.ones((1, t)), None)

    def infer(model):
        return jax.make_jaxpr(lambda p: model.apply({"params": p}, *args, method="infer"))(
            params)

    compact, unrolled = _scan_unrolls(infer(g)), _scan_unrolls(infer(gu))
    # the text encoder's transformer and the flows (this config's coupling WaveNets have
    # too few layers to scan)
    assert len(compact) == len(unrolled) >= 2
    assert all(u == 1 for _, u in compact)
    assert all(u == n for n, u in unrolled), unrolled


def test_training_step_takes_the_backends_unroll_choice():
    from configs import sovits_44k
    from svcjax.runtime import runner
    from svcjax.train.sovits import SovitsTask

    assert runner.KERNELS["cpu"]["train_unroll_layers"] is True
    assert not any(k["unroll_layers"] for k in runner.KERNELS.values())   # inference scans
    g = synthesizer.from_config(sovits_44k.get_config("variant=test"))
    task = SovitsTask.__new__(SovitsTask)     # only the generator choice is exercised here
    task.G = g
    task.unroll_layers = None                 # the backend's choice (the tests run on CPU)
    assert task.train_generator().unroll_layers is True
    task.unroll_layers = False
    assert task.train_generator() is g
