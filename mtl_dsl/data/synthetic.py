"""The built-in synthetic sources: the MMoE paper's correlated-tasks generator and a
conversion funnel; each yields a frame (a dict of equal-length numpy columns) from its
parameters alone, so a spec can be run without any file. Their columns, and what each
holds, are declared by their parameter models' `columns()` (mtl_dsl/language/registry/data.py)."""

from __future__ import annotations

import numpy as np

from ..language import registry as reg
from .values import Frame


# --------------------------------------------------------------------------
# The MMoE paper's synthetic benchmark (docs/architectures.md)
# --------------------------------------------------------------------------

def correlated(p: reg.SyntheticCorrelated) -> Frame:
    """Two tasks whose correlation is set by `p.correlation`.

    `u1, u2` orthogonal unit vectors; `w1 = c u1`, `w2 = c (p u1 + sqrt(1-p^2) u2)`;
    `y_j = w_j.x + sum_i sin(alpha_i w_j.x + beta_i) + eps_j`, eps ~ N(0, noise) (noise is the
    variance); alpha, beta ~ N(0, 1) are redrawn with each seed and shared by both tasks.
    """
    rng = np.random.default_rng(p.seed)
    q, _ = np.linalg.qr(rng.standard_normal((p.dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = p.c * u1
    w2 = p.c * (p.correlation * u1 + np.sqrt(max(0.0, 1 - p.correlation ** 2)) * u2)
    alpha, beta = rng.standard_normal(p.m), rng.standard_normal(p.m)
    x = rng.standard_normal((p.rows, p.dim))
    frame: Frame = {f"x_{i}": x[:, i].astype(np.float32) for i in range(p.dim)}
    for j, w in ((1, w1), (2, w2)):
        s = x @ w  # (N,)
        y = s + np.sin(np.outer(s, alpha) + beta).sum(axis=1)
        y = y + rng.normal(0.0, np.sqrt(p.noise), size=p.rows)
        frame[f"y{j}"] = _target(y, p).astype(np.float32)
    return frame


def _target(y: np.ndarray, p: reg.SyntheticCorrelated) -> np.ndarray:
    """The regression target, or its binarised (above median) / quantile-binned variant."""
    if p.target == "binary":
        return (y > np.median(y)).astype(np.float32)
    if p.target == "multiclass":
        edges = np.quantile(y, np.linspace(0, 1, p.classes + 1)[1:-1])
        return np.digitize(y, edges).astype(np.float32)
    return y


# --------------------------------------------------------------------------
# A conversion funnel for ESMM / ESM2 / AITM (docs/data.md)
# --------------------------------------------------------------------------

def funnel(p: reg.SyntheticFunnel) -> Frame:
    """Impressions of (user, item) pairs with `dense` numeric features `d_i`.

    Every step is a Bernoulli draw of a logistic score `bias + <u_user, v_item> + w.d`,
    with its own user factors `u`, item factors `v` and weights `w` (drawn once per seed),
    and happens only after the step before it: click; then D-action (cart or wish list)
    or else O-action; purchase, likelier after a D-action; activation after a purchase.
    So purchase is only ever 1 on clicked rows, and each rate depends on the features.
    """
    rng = np.random.default_rng(p.seed)
    n, k = p.rows, p.factors
    user = _zipf_ids(rng, p.users, n)
    item = _zipf_ids(rng, p.items, n)
    category = rng.integers(0, p.categories, p.items)[item]
    dense = rng.standard_normal((n, p.dense))

    factors: list[tuple[np.ndarray, np.ndarray]] = []  # each step's (u, v)

    def step(bias: float) -> np.ndarray:
        u, v = rng.normal(0, 0.8, (p.users, k)), rng.normal(0, 0.8, (p.items, k))
        factors.append((u, v))
        w, c = rng.normal(0, 0.5, p.dense), rng.normal(0, 0.5, p.categories)
        score = bias + (u[user] * v[item]).sum(1) + dense @ w + c[category]
        return rng.random(n) < 1 / (1 + np.exp(-score))

    click = step(np.log(p.ctr / (1 - p.ctr)))
    daction = click & step(-1.0)
    oaction = click & ~daction
    purchase = (daction & step(-0.5)) | (oaction & step(-3.0))
    activation = purchase & step(0.0)
    frame: Frame = {"user": user.astype(np.int64), "item": item.astype(np.int64),
                    "category": category.astype(np.int64)}
    frame |= {f"d_{i}": dense[:, i].astype(np.float32) for i in range(p.dense)}
    for name, col in zip(reg.FUNNEL_LABELS, (click, daction, oaction, purchase, activation)):
        frame[name] = col.astype(np.float32)
    if p.history:  # drawn last, so the other columns are the same with or without it
        frame["history"] = _history(rng, user, *factors[0], p.history)
    return frame


def _history(rng: np.random.Generator, user: np.ndarray, u: np.ndarray, v: np.ndarray,
             longest: int) -> np.ndarray:
    """Each row's behaviour sequence: 1..longest items drawn with probability softmax(u . v)
    under the user's click factors, so the history says what the user clicks (DUPN's data)."""
    scores = u @ v.T  # (users, items)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    lengths = rng.integers(1, longest + 1, len(user))
    out = np.empty(len(user), dtype=object)
    for who in np.unique(user):
        rows = np.flatnonzero(user == who)
        draws = rng.choice(v.shape[0], size=(len(rows), longest), p=probs[who])
        out[rows] = ["|".join(map(str, d[:n])) for d, n in zip(draws, lengths[rows])]
    return out


def _zipf_ids(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """Popularity-skewed ids, as users and items are in real logs."""
    weights = 1.0 / np.arange(1, size + 1) ** 0.8
    return rng.choice(size, size=n, p=weights / weights.sum())


SYNTHETIC = {"synthetic.correlated": correlated, "synthetic.funnel": funnel}
