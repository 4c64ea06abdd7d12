"""Dimension and variable names of the comparison Dataset: the one place they are spelled.

Every module builds results with these names, so a Dataset from any predictor,
engine, scenario or analysis lines up with every other (DESIGN.md, "The
comparison Dataset"); an analysis that adds a variable names its dims here.
"""

PREDICTOR = "predictor"
SCENARIO = "scenario"
EPISODE = "episode"
POSITION = "position"  # 1-based: position t predicts y_t from the t-1 earlier items
OUTCOME = "outcome"
QUANTILE = "quantile"
Y_GRID = "y_grid"
FEATURE = "feature"
COMPLETION = "completion"  # index of a sampled completion of a prompt
COMPLETION_STEP = "completion_step"  # 1-based index of a generated token within a completion
PROMPT_SCENARIO = "prompt_scenario"  # the prompt scenarios that completions were sampled for
PROMPT = "prompt"  # a prompt's episode index within its prompt scenario
LATENT = "latent"  # joint index over a prior's enumerated latent values
PAIR = "pair"  # an unordered pair of learners (disagreement between them)
PROMPT_CLASS = "prompt_class"  # a set of prompts an analysis reports on together
RULE = "rule"  # a rule a sampled completion may follow
STEP = "step"  # the training step of a learner's checkpoint (learner.training.eval_steps)
SIMULATION = "simulation"  # one simulation of simulation-based calibration: latents, data, posterior draws
SBC_QUANTITY = "sbc_quantity"  # a scalar quantity whose posterior rank SBC checks (a latent's component, y_next)
ENGINE = "engine"  # a Bayes engine an analysis ran (closed_form, enumeration, mcmc)
ECDF_POINT = "ecdf_point"  # a point z in (0, 1) where the ECDF of ranks or PIT values is evaluated
CALIBRATION_BIN = "calibration_bin"  # a bin of predicted probabilities (reliability diagram)
DETECTOR = "detector"  # a predictor whose own answers score how far a context is from the prior
FIT_MOMENT = "fit_moment"  # a sum over the predictions of a mixture fit (n, Σh, Σf, Σh², Σf², Σhf): pooled r

# Site names of the prior convention.
Y_SITE = "y"
X_SITE = "x"
POSITION_PLATE = "position"

# Quantile levels every regression predictor reports.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

__all__ = [
    "PREDICTOR",
    "SCENARIO",
    "EPISODE",
    "POSITION",
    "OUTCOME",
    "QUANTILE",
    "Y_GRID",
    "FEATURE",
    "COMPLETION",
    "COMPLETION_STEP",
    "PROMPT_SCENARIO",
    "PROMPT",
    "LATENT",
    "PAIR",
    "PROMPT_CLASS",
    "RULE",
    "STEP",
    "SIMULATION",
    "SBC_QUANTITY",
    "ENGINE",
    "ECDF_POINT",
    "CALIBRATION_BIN",
    "DETECTOR",
    "FIT_MOMENT",
    "Y_SITE",
    "X_SITE",
    "POSITION_PLATE",
    "QUANTILES",
]
