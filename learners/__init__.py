"""metabayes learners: sequence models meta-trained on fresh prior samples, and their checkpoints.

>>> import jax, learners, priors                                            # doctest: +SKIP
>>> result = learners.train(priors.get("coin_mixture"), out_dir="runs/coin")  # doctest: +SKIP
>>> learner = learners.load("runs/coin")                                    # doctest: +SKIP
>>> learner.predict(episodes)  # doctest: +SKIP
(xr.Dataset: log_prob (episode, position, outcome), log_score)
"""

import os

# JAX samples the prior beside torch: never let it grab the accelerator's memory (toolkit sets this too).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# torch's OpenMP threads spin at every barrier by default; when anything else wants the same cores (another
# process, JAX) a small model's step became 6x slower on 2 cores, while sleeping instead costs nothing measurable
# on an idle machine. Read once when torch loads, so it only applies if learners is imported before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .checkpoint import weights_sha256
from .config import architecture_config, architectures_for
from .model import Architecture, CausalTransformer, ModelConfig, TransformerConfig, build_model, register_architecture
from .pfn import PFNConfig, PFNTransformer  # registers the regression learner
from .predictor import LearnerPredictor, load
from .rnn import RecurrentLM, RNNConfig  # registers the LSTM / GRU architecture
from .train import (
    TrainConfig,
    TrainResult,
    check_curriculum,
    config_diff,
    config_matches,
    lr_at,
    run_signature,
    train,
)

__all__ = [
    "Architecture",
    "architecture_config",
    "architectures_for",
    "TransformerConfig",
    "ModelConfig",
    "CausalTransformer",
    "RNNConfig",
    "RecurrentLM",
    "PFNConfig",
    "PFNTransformer",
    "build_model",
    "register_architecture",
    "TrainConfig",
    "TrainResult",
    "train",
    "load",
    "LearnerPredictor",
    "config_matches",
    "check_curriculum",
    "config_diff",
    "run_signature",
    "lr_at",
    "weights_sha256",
]
