"""Fixtures for the learner tests: tiny models, a few steps, always on the CPU."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest
import torch

import priors
from learners import TrainConfig, TransformerConfig
from toolkit import Prior

LENGTH = 16


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    """One thread: repeatable, and immune to OpenMP spin-waits when other jobs share the cores.

    The library itself never sets the thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from more, and lose a lot on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def coin_prior():
    return priors.get("coin_mixture")


@pytest.fixture(scope="session")
def eos_prior():
    """Three tokens, the last one ends the sequence: episodes carry a mask."""

    def model(length, y=None):
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=jnp.array([0.45, 0.45, 0.1])), obs=y)

    return Prior(model, kind="tokens", outcomes=("a", "b", "<eos>"), eos=2, name="eos_coin")


@pytest.fixture
def tiny_model():
    return TransformerConfig(n_layer=1, n_head=2, n_embd=16)


@pytest.fixture
def tiny_train():
    return TrainConfig(
        steps=12, batch_size=16, length=LENGTH, lr=3e-3, warmup_steps=2, checkpoint_every=4, log_every=2, device="cpu"
    )
