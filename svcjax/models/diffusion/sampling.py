"""Diffusion samplers: DDPM, DDIM, PNDM (PLMS), DPM-Solver, DPM-Solver++ and UniPC.

Each sampler is the whole denoising loop as one ``lax.scan`` over the denoiser calls, to be
traced inside ``jax.jit``. Everything that depends only on the schedule and on the static
``(k, method, speedup)`` - which steps are visited, the time fed to the network, every
solver coefficient - is computed once in NumPy (float64) by :func:`plan` and enters the scan
as a table; the traced body is the network call plus a few fused multiply-adds.

The step schedules are those of So-VITS-SVC 4.1's shallow diffusion:

============  =================================================================  ==========
method        steps visited (``k`` = diffusion depth, ``s`` = ``speedup``)       calls
============  =================================================================  ==========
ddpm          ``k-1, ..., 0``; ancestral steps, x0 clipped to [-1, 1]            ``k``
ddim          ``range(0, k, s)`` reversed; each goes to ``max(t - s, 0)``        ``ceil(k/s)``
pndm          as ddim, pseudo linear multistep; the first step takes 2 calls     ``ceil(k/s)+1``
dpm-solver    ``k//s`` time-uniform steps on betas[:k] (continuous t in          ``k//s``
dpm-solver++  [1/k, 1]), multistep order 2 (first step order 1; the last step
unipc         order 1 when fewer than 10 steps - always for UniPC, bh2 variant)
============  =================================================================  ==========

``speedup <= 1`` runs plain DDPM whatever the method (as the reference does). The start
``x`` is the mel noised to step ``k-1`` (shallow diffusion, :func:`shallow_start`) or pure
noise (``k`` = all steps). ``rng=None`` makes every random draw zero.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from svcjax.models.diffusion.gaussian import Schedule, check_k_step

Array = jax.Array
EpsFn = Callable[[Array, Array], Array]

METHODS = ("ddpm", "ddim", "pndm", "dpm-solver", "dpm-solver++", "unipc")

__all__ = ["METHODS", "Plan", "plan", "sample", "shallow_start", "resolve_method"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one sampler run does: ``method`` actually run, ``t_model`` (the time input of each
    network call, float32 ``(n_calls,)``) and per-call coefficient tables."""

    method: str
    k: int
    speedup: int
    t_model: np.ndarray
    tables: dict

    @property
    def n_calls(self) -> int:
        return len(self.t_model)


def resolve_method(method: str | None, speedup: int) -> str:
    """The sampler that runs: ``ddpm`` for ``speedup <= 1`` or no method (as the reference)."""
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown diffusion sampler {method!r}; known: {', '.join(METHODS)}")
    if method is None or int(speedup) <= 1:
        return "ddpm"
    return method


def check(method: str | None, k: int, speedup: int, timesteps: int) -> str:
    """Validate ``(method, k, speedup)`` against a ``timesteps``-step schedule (one clear error)."""
    m = resolve_method(method, speedup)
    check_k_step(k, timesteps=timesteps)
    if m in ("dpm-solver", "dpm-solver++", "unipc") and int(k) // int(speedup) < 2:
        raise ValueError(f"{m} takes k_step // speedup steps and needs at least 2; got "
                         f"k_step={k}, speedup={speedup} (lower speedup or raise k_step)")
    return m


@functools.lru_cache(maxsize=256)
def plan(schedule: Schedule, k: int, method: str | None, speedup: int) -> Plan:
    """The step schedule and coefficient tables of one sampler run (cached, hashable args)."""
    m = check(method, k, speedup, schedule.timesteps)
    k, s = int(k), int(speedup)
    builder = {"ddpm": _plan_ddpm, "ddim": _plan_ddim, "pndm": _plan_pndm,
               "dpm-solver": functools.partial(_plan_dpm, plus=False),
               "dpm-solver++": functools.partial(_plan_dpm, plus=True),
               "unipc": _plan_unipc}[m]
    t_model, tables = builder(schedule, k, s)
    tables = {name: np.asarray(v, np.float32) for name, v in tables.items()}
    return Plan(m, k, s if m != "ddpm" else 1, np.asarray(t_model, np.float32), tables)


# -- plans ----------------------------------------------------------------------------------

def _f64(schedule: Schedule, name: str) -> np.ndarray:
    return schedule.table(name).astype(np.float64)


def _plan_ddpm(sch: Schedule, k: int, s: int):
    steps = np.arange(k - 1, -1, -1)
    return steps, dict(
        recip=_f64(sch, "sqrt_recip_alphas_cumprod")[steps],
        recipm1=_f64(sch, "sqrt_recipm1_alphas_cumprod")[steps],
        coef1=_f64(sch, "posterior_mean_coef1")[steps],
        coef2=_f64(sch, "posterior_mean_coef2")[steps],
        sigma=np.exp(0.5 * _f64(sch, "posterior_log_variance_clipped")[steps]) * (steps != 0),
    )


def _ddim_steps(k: int, s: int) -> np.ndarray:
    return np.arange(0, k, s)[::-1]


def _plan_ddim(sch: Schedule, k: int, s: int):
    ac = _f64(sch, "alphas_cumprod")
    steps = _ddim_steps(k, s)
    a_t, a_prev = ac[steps], ac[np.maximum(steps - s, 0)]
    return steps, dict(sqrt_a_prev=np.sqrt(a_prev), sqrt_a_t=np.sqrt(a_t),
                       c_eps=np.sqrt((1 - a_prev) / a_prev) - np.sqrt((1 - a_t) / a_t))


def _plan_pndm(sch: Schedule, k: int, s: int):
    """Call 0 and 1 make the first (Heun-like) step; call j >= 2 is step j-1 (PLMS)."""
    ac = _f64(sch, "alphas_cumprod")
    steps = _ddim_steps(k, s)
    n = len(steps)
    a_t, a_prev = ac[steps], ac[np.maximum(steps - s, 0)]
    sa_t, sa_prev = np.sqrt(a_t), np.sqrt(a_prev)
    d = a_prev - a_t
    cx = 1 / (sa_t * (sa_t + sa_prev))
    ce = 1 / (sa_t * (np.sqrt((1 - a_prev) * a_t) + np.sqrt((1 - a_t) * a_prev)))
    # step index whose x-update each call performs (call 0 only predicts, with step 0's)
    upd = np.concatenate([[0, 0], np.arange(1, n)])
    t_model = np.concatenate([[steps[0], max(steps[0] - s, 0)], steps[1:]])
    weights = [(0, 0, 0, 0, 1), (1, 1, 0, 0, 2)]  # (e, h1, h2, h3, denominator)
    for j in range(2, n + 1):
        hist = min(j - 1, 3)
        weights.append({1: (3, -1, 0, 0, 2), 2: (23, -16, 5, 0, 12),
                        3: (55, -59, 37, -9, 24)}[hist])
    w = np.asarray(weights, np.float64)
    return t_model, dict(
        d=d[upd], cx=cx[upd], ce=ce[upd],
        w0=w[:, 0], w1=w[:, 1], w2=w[:, 2], w3=w[:, 3], den=w[:, 4],
        update=np.asarray([0] + [1] * n), predict=np.asarray([1] + [0] * n),
        push=np.asarray([1, 0] + [1] * (n - 1)),
    )


class _VPSchedule:
    """The discrete-time VP schedule DPM-Solver and UniPC see: betas[:k], continuous t in
    ``[1/N, 1]``, log alpha interpolated piecewise-linearly between ``t_n = (n+1)/N``."""

    def __init__(self, betas32: np.ndarray, clip_lambda: float | None):
        log_alphas = 0.5 * np.cumsum(np.log(1 - betas32.astype(np.float64)))
        if clip_lambda is not None:  # dpm_solver's numerical_clip_alpha (cosine schedules)
            lambs = log_alphas - 0.5 * np.log(1 - np.exp(2 * log_alphas))
            idx = int(np.searchsorted(lambs[::-1], clip_lambda))
            if idx > 0:
                log_alphas = log_alphas[:-idx]
        self.log_alpha_array = log_alphas
        self.N = len(log_alphas)
        self.t_array = np.linspace(0.0, 1.0, self.N + 1)[1:]

    def log_alpha(self, t):
        return np.interp(t, self.t_array, self.log_alpha_array)

    def alpha(self, t):
        return np.exp(self.log_alpha(t))

    def sigma(self, t):
        return np.sqrt(1 - np.exp(2 * self.log_alpha(t)))

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * np.log(1 - np.exp(2 * la))

    def model_time(self, t):
        return (t - 1.0 / self.N) * self.N

    def time_uniform(self, steps: int) -> np.ndarray:
        return np.linspace(1.0, 1.0 / self.N, steps + 1)


def _plan_dpm(sch: Schedule, k: int, s: int, plus: bool):
    """Multistep DPM-Solver(++) order 2: call i evaluates the model at ts[i] and steps to ts[i+1]."""
    vp = _VPSchedule(sch.betas[:k], clip_lambda=-5.1)
    steps = k // s
    ts = vp.time_uniform(steps)
    lam, la, alpha, sigma = vp.lam(ts), vp.log_alpha(ts), vp.alpha(ts), vp.sigma(ts)
    A, P, R = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    for i in range(steps):
        h = lam[i + 1] - lam[i]
        order = 1 if i == 0 or (steps < 10 and i == steps - 1) else 2
        if plus:
            A[i] = sigma[i + 1] / sigma[i]
            P[i] = alpha[i + 1] * np.expm1(-h)
        else:
            A[i] = np.exp(la[i + 1] - la[i])
            P[i] = sigma[i + 1] * np.expm1(h)
        if order == 2:
            R[i] = h / (lam[i] - lam[i - 1])  # 1 / r0
    return vp.model_time(ts[:-1]), dict(alpha=alpha[:-1], sigma=sigma[:-1], A=A, P=P, R=R)


def _plan_unipc(sch: Schedule, k: int, s: int):
    """Multistep UniPC-bh2 order 2 (data prediction). Call i evaluates the model at ts[i] on
    the predicted x, corrects step i (i >= 1) and predicts step i+1; the last step is order 1
    without corrector."""
    vp = _VPSchedule(sch.betas[:k], clip_lambda=None)
    steps = k // s
    ts = vp.time_uniform(steps)
    lam, alpha, sigma = vp.lam(ts), vp.alpha(ts), vp.sigma(ts)

    def step(j):  # coefficients of the step ts[j-1] -> ts[j]
        h = lam[j] - lam[j - 1]
        hh = -h
        h_phi_1 = np.expm1(hh)
        b_h = np.expm1(hh)  # bh2
        order = 1 if j == 1 or j == steps else 2
        rk = (lam[j - 2] - lam[j - 1]) / h if order == 2 else 1.0
        out = dict(sr=sigma[j] / sigma[j - 1], ah=alpha[j] * h_phi_1, kb=alpha[j] * b_h, rk=rk,
                   pred=0.5 if order == 2 else 0.0)
        if order == 1:
            out.update(c0=0.0, c1=0.5)
        else:
            h_phi_k = h_phi_1 / hh - 1
            b1 = h_phi_k / b_h
            h_phi_k = h_phi_k / hh - 0.5
            b2 = h_phi_k * 2 / b_h
            c0, c1 = np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), np.array([b1, b2]))
            out.update(c0=c0, c1=c1)
        return out

    corr = [None] + [step(j) for j in range(1, steps)]
    pred = [step(j) for j in range(1, steps + 1)]
    tables = dict(
        alpha=alpha[:-1], sigma=sigma[:-1],
        # corrector of step i (none for i = 0: its gain kb is 0, so x stays the start)
        c_kb=[0.0] + [c["kb"] for c in corr[1:]],
        c_c0=[0.0] + [c["c0"] for c in corr[1:]],
        c_c1=[0.0] + [c["c1"] for c in corr[1:]],
        c_rk=[1.0] + [c["rk"] for c in corr[1:]],
        # predictor of step i+1
        p_sr=[p["sr"] for p in pred], p_ah=[p["ah"] for p in pred],
        p_kb=[p["kb"] for p in pred], p_rho=[p["pred"] for p in pred],
        p_rk=[p["rk"] for p in pred],
    )
    return vp.model_time(ts[:-1]), tables


# -- the loops ------------------------------------------------------------------------------

def shallow_start(schedule: Schedule, x0: Array, k: int, noise: Array) -> Array:
    """The normalised mel ``x0`` noised to step ``k - 1`` (where shallow diffusion starts)."""
    return schedule.q_sample(x0, int(k) - 1, noise)


def sample(eps_fn: EpsFn, x: Array, schedule: Schedule, k: int, method: str | None,
           speedup: int, rng: Array | None = None) -> Array:
    """Denoise ``x`` (at step ``k - 1``, normalised) to step 0; call inside ``jax.jit``.

    ``eps_fn(x, t)`` predicts the noise in ``x`` at the (float32, scalar) model time ``t``.
    ``rng`` is used by DDPM only (one key folded with the step index); ``None`` = no noise.
    """
    p = plan(schedule, int(k), method, int(speedup))
    xs = {name: jnp.asarray(v) for name, v in p.tables.items()}
    xs["t"] = jnp.asarray(p.t_model)
    return _LOOPS[p.method](eps_fn, x, xs, rng)


def _scan(body, carry, xs):
    return jax.lax.scan(body, carry, xs)[0]


def _loop_ddpm(eps_fn, x, xs, rng):
    def body(x, c):
        eps = eps_fn(x, c["t"])
        x0 = jnp.clip(c["recip"] * x - c["recipm1"] * eps, -1.0, 1.0)
        mean = c["coef1"] * x0 + c["coef2"] * x
        if rng is None:
            return mean, None
        noise = jax.random.normal(jax.random.fold_in(rng, c["t"].astype(jnp.int32)), x.shape,
                                  x.dtype)
        return mean + c["sigma"] * noise, None

    return _scan(body, x, xs)


def _loop_ddim(eps_fn, x, xs, rng):
    def body(x, c):
        eps = eps_fn(x, c["t"])
        return c["sqrt_a_prev"] * (x / c["sqrt_a_t"] + c["c_eps"] * eps), None

    return _scan(body, x, xs)


def _loop_pndm(eps_fn, x, xs, rng):
    zeros = jnp.zeros_like(x)

    def body(carry, c):
        x, x_eval, h1, h2, h3 = carry
        e = eps_fn(x_eval, c["t"])
        prime = (c["w0"] * e + c["w1"] * h1 + c["w2"] * h2 + c["w3"] * h3) / c["den"]
        x_new = jnp.where(c["update"] > 0, x + c["d"] * (c["cx"] * x - c["ce"] * prime), x)
        x_eval = jnp.where(c["predict"] > 0, x + c["d"] * (c["cx"] * x - c["ce"] * e), x_new)
        push = c["push"] > 0
        h1, h2, h3 = (jnp.where(push, e, h1), jnp.where(push, h1, h2), jnp.where(push, h2, h3))
        return (x_new, x_eval, h1, h2, h3), None

    return _scan(body, (x, x, zeros, zeros, zeros), xs)[0]


def _loop_dpm(plus):
    def loop(eps_fn, x, xs, rng):
        def body(carry, c):
            x, m_prev = carry
            eps = eps_fn(x, c["t"])
            m = (x - c["sigma"] * eps) / c["alpha"] if plus else eps
            x = c["A"] * x - c["P"] * m - (0.5 * c["P"]) * (c["R"] * (m - m_prev))
            return (x, m), None

        return _scan(body, (x, jnp.zeros_like(x)), xs)[0]

    return loop


def _loop_unipc(eps_fn, x, xs, rng):
    def body(carry, c):
        x_lin, x_eval, m0, m1 = carry  # x_lin: the linear (first-order) part of step i
        eps = eps_fn(x_eval, c["t"])
        m = (x_eval - c["sigma"] * eps) / c["alpha"]
        d1 = (m1 - m0) / c["c_rk"]
        x = x_lin - c["c_kb"] * (c["c_c0"] * d1 + c["c_c1"] * (m - m0))
        m1, m0 = m0, m
        x_lin = c["p_sr"] * x - c["p_ah"] * m0
        x_eval = x_lin - c["p_kb"] * (c["p_rho"] * ((m1 - m0) / c["p_rk"]))
        return (x_lin, x_eval, m0, m1), None

    zeros = jnp.zeros_like(x)
    return _scan(body, (x, x, zeros, zeros), xs)[1]


_LOOPS = {"ddpm": _loop_ddpm, "ddim": _loop_ddim, "pndm": _loop_pndm,
          "dpm-solver": _loop_dpm(False), "dpm-solver++": _loop_dpm(True),
          "unipc": _loop_unipc}


def n_calls(method: str | None, k: int, speedup: int) -> int:
    """Denoiser calls of one run (no schedule needed)."""
    m = resolve_method(method, speedup)
    k, s = int(k), int(speedup)
    return {"ddpm": k, "ddim": math.ceil(k / s), "pndm": math.ceil(k / s) + 1}.get(m, k // s)
