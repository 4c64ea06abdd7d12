"""The language aⁿbⁿ: n a's, n b's, then an end token; P(n) ∝ qⁿ for n ≥ 1.

The probabilistic grammar of Ferenc Huszár's "Autoregressive models, zero
probability prompts" (2023, inFERENCe blog): every sequence it produces obeys
both "as many b's as a's" and "no a after a b", so a model trained on it may
extrapolate either rule to a prompt the grammar cannot produce (``ba``,
``aabab``), and cross-entropy cannot tell which.

n is truncated to ``1..n_max`` with ``n_max = (max_length − 1) // 2`` so that
the longest sequence plus its end token fits in ``max_length`` positions;
the probability mass cut off, ``q ** n_max``, is recorded in the prior's
metadata (and so in the comparison Dataset's attrs). The truncation depends
on ``max_length`` only, never on the length a model is called at: evaluating
a prompt of 9 tokens must use the prior the learner was trained on, whose
first 9 positions are the same for every call length. Call the model at the
training length and every sequence ends inside it.

Given n every token is deterministic (a for t ≤ n, b for n < t ≤ 2n, EOS
from 2n + 1 on; the repeated EOS after the first is padding, masked out), so
the only latent is n and the Bayes predictive is a posterior over the n
consistent with the context. Both engines give it exactly: enumeration over
n (the site has finite support and the emissions are one-hot `Categorical`s
with exact zeros, so an impossible context gets log-probability −inf) and
the closed form `exact_predictive` below, which tests check against each
other and against brute-force enumeration of every sequence.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Episodes, Prior, register_prior
from toolkit.errors import ModelError

A, B, EOS = 0, 1, 2
OUTCOMES = ("a", "b", "<eos>")


def length_weights(q: float, max_length: int) -> np.ndarray:
    """P(n) for n = 0..n_max (index = n; P(0) = 0): qⁿ normalised over 1..n_max.

    Returns
    -------
    np.ndarray, shape (n_max + 1,)
    """
    n_max = max_n(max_length)
    n = np.arange(n_max + 1)
    weights = np.where(n >= 1, float(q) ** n.astype(np.float64), 0.0)
    return weights / weights.sum()


def max_n(max_length: int) -> int:
    """Largest n whose sequence aⁿbⁿ plus EOS fits in ``max_length`` positions (at least 1)."""
    return max(1, (int(max_length) - 1) // 2)


def tokens_given_n(n, length: int):
    """The tokens y_1..y_length of the sequence with n a's: a, then b, then EOS. ``n`` broadcasts."""
    t = jnp.arange(1, length + 1)
    n = jnp.asarray(n)[..., None]
    return jnp.where(t <= n, A, jnp.where(t <= 2 * n, B, EOS))  # (..., length)


def closed_form_probs(y: np.ndarray, mask: np.ndarray | None, q: float, max_length: int) -> np.ndarray:
    """Exact p(y_t = v | y_<t) by filtering the n consistent with each context.

    Parameters
    ----------
    y : np.ndarray of int, shape (episode, position)
    mask : np.ndarray of bool, shape (episode, position), optional
        False on padding, which conditions on nothing.
    q, max_length
        The prior's parameters.

    Returns
    -------
    np.ndarray, shape (episode, position, outcome)
        NaN where the context y_<t has probability zero.
    """
    y = np.asarray(y)
    num_episodes, length = y.shape
    weights = length_weights(q, max_length)[1:]  # (N,) for n = 1..n_max
    n = np.arange(1, len(weights) + 1)
    table = np.asarray(tokens_given_n(n, length))  # (N, T)
    observed = np.ones(y.shape, bool) if mask is None else np.asarray(mask, bool)
    agrees = (y[:, None, :] == table[None]) | ~observed[:, None, :]  # (E, N, T)
    # n is consistent with the context y_<t when it agrees at every s < t
    consistent = np.concatenate([np.ones((num_episodes, len(n), 1), bool), np.cumprod(agrees, axis=-1)[..., :-1] > 0], -1)
    posterior = weights[None, :, None] * consistent  # (E, N, T), unnormalised
    total = posterior.sum(axis=1)  # (E, T)
    one_hot = table[..., None] == np.arange(len(OUTCOMES))  # (N, T, V)
    probs = np.einsum("ent,ntv->etv", posterior, one_hot.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[..., None] > 0, probs / total[..., None], np.nan)


@register_prior("anbn")
def anbn(q: float = 0.5, max_length: int = 48) -> Prior:
    """aⁿbⁿ followed by EOS, P(n) ∝ qⁿ for 1 ≤ n ≤ (max_length − 1) // 2.

    Parameters
    ----------
    q : float
        Ratio of successive length probabilities, in (0, 1).
    max_length : int
        Positions every sequence (plus its EOS) must fit in: the training length.

    Examples
    --------
    >>> import jax, priors
    >>> prior = priors.get("anbn", q=0.5, max_length=9)
    >>> prior.sample(jax.random.key(0), 2, 9).y.shape
    (2, 9)
    """
    q = float(q)
    if not 0.0 < q < 1.0:
        raise ModelError(f"anbn needs 0 < q < 1, got q={q}")
    if int(max_length) != max_length or max_length < 3:
        raise ModelError(f"anbn needs an integer max_length >= 3 (room for 'ab' and EOS), got {max_length}")
    max_length = int(max_length)
    weights = length_weights(q, max_length)

    def model(length, y=None):
        # Categorical with exact zeros, not Bernoulli: an impossible token must get log-probability -inf
        n = numpyro.sample("n", dist.Categorical(probs=jnp.asarray(weights)))
        probs = jnp.eye(len(OUTCOMES), dtype=jnp.float64)[tokens_given_n(n, length)]  # (length, V), one-hot
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=probs), obs=y)

    def exact_predictive(episodes: Episodes):
        probs = closed_form_probs(episodes.y, episodes.mask, q, max_length)
        # NaN rows mark contexts of probability zero (undefined Bayes), which validation would reject
        return dist.Categorical(probs=jnp.asarray(probs), validate_args=False)

    return Prior(
        model,
        kind="tokens",
        outcomes=OUTCOMES,
        eos=EOS,
        exact_predictive=exact_predictive,
        metadata={"max_n": max_n(max_length), "truncated_mass": q ** max_n(max_length)},
    )


__all__ = ["anbn", "closed_form_probs", "length_weights", "max_n", "tokens_given_n", "A", "B", "EOS", "OUTCOMES"]
