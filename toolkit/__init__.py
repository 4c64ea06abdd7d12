"""metabayes toolkit: priors, episodes, scenarios, predictors, Bayes engines, metrics and result IO."""

import os

# JAX samples priors beside a torch learner: never let it grab the accelerator's memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

# Exact engines promise 1e-9 agreement with closed forms, so JAX works in float64.
# Scoped `jax.enable_x64` contexts proved unsafe: functions first traced in float32
# keep their cached float32 lowering. Learners cast to float32 themselves.
jax.config.update("jax_enable_x64", True)

from . import dims, kinds, metrics
from .episodes import Episodes
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MetabayesError,
    ModelError,
    TrainingError,
    UnknownNameError,
)
from .kinds import DataKind, get_kind
from .predictive import Prediction, Predictor, regression_predictions, token_predictions
from .prior import Prior
from .registry import available_priors, get_prior, load_prior, register_prior
from .baselines import (  # noqa: E402
    AveragingPredictor,
    FrequencyPredictor,
    KNNPredictor,
    LeastSquaresPredictor,
    RidgePredictor,
)
from .bayes import bayes_predictor  # noqa: E402
from .compare import compare  # noqa: E402
from .results import open_results  # noqa: E402
from .sbc import simulation_based_calibration  # noqa: E402
from .scenario import Scenario, scenario_grid  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "dims",
    "kinds",
    "metrics",
    "DataKind",
    "get_kind",
    "Episodes",
    "Prior",
    "bayes_predictor",
    "FrequencyPredictor",
    "RidgePredictor",
    "LeastSquaresPredictor",
    "KNNPredictor",
    "AveragingPredictor",
    "compare",
    "open_results",
    "simulation_based_calibration",
    "Scenario",
    "scenario_grid",
    "Predictor",
    "Prediction",
    "token_predictions",
    "regression_predictions",
    "register_prior",
    "get_prior",
    "available_priors",
    "load_prior",
    "MetabayesError",
    "ConfigError",
    "UnknownNameError",
    "ModelError",
    "DataError",
    "CheckpointError",
    "TrainingError",
]
