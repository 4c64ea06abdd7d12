"""Training or reusing a run's learners, and the entry point for training them under ``torchrun``.

    torchrun --standalone --nproc_per_node 8 -m comparisons.training \\
        --config comparisons/configs/NAME.toml --out results/NAME
    python comparisons/run.py --config comparisons/configs/NAME.toml --out results/NAME   # reuses the learners

Each learner of the plan (`comparisons.plan.LearnerPlan`) is reused when its
folder holds a finished checkpoint of the same configuration, else trained,
resuming from the newest checkpoint. Under torchrun every process trains each
learner data-parallel (`learners.distributed`); rank 0 writes the checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import learners  # noqa: E402
from comparisons.plan import LearnerPlan, Plan  # noqa: E402
from learners.predictor import LearnerPredictor  # noqa: E402
from toolkit.errors import MetabayesError  # noqa: E402


def train_or_reuse(lp: LearnerPlan, prior, *, progress: bool) -> LearnerPredictor:
    """The learner of ``lp``: its finished checkpoint when the config matches, else trained (resuming)."""
    if learners.config_matches(lp.directory, prior, lp.model, lp.train, finished=True, curriculum=lp.curriculum):
        print(f"reusing the trained learner in {lp.directory}")
        return learners.load(lp.directory, name=lp.name)
    if progress and lp.label:
        print(f"training {lp.label}")
    predictor = learners.train(prior, lp.model, lp.train, lp.directory, progress=progress, curriculum=lp.curriculum).predictor
    predictor.name = lp.name
    return predictor


def train_learners(plan: Plan, *, progress: bool) -> dict[str, LearnerPredictor]:
    """Every learner of the plan, in the plan's order, trained or reused."""
    return {name: train_or_reuse(lp, plan.prior, progress=progress) for name, lp in plan.learners.items()}


def main(argv: list[str] | None = None) -> int:
    """Train an experiment's learners on every process torchrun launches; ``comparisons/run.py`` then reuses them."""
    from comparisons.config import add_config_arguments, config_from_args
    from comparisons.plan import build_plan

    parser = argparse.ArgumentParser(
        prog="torchrun ... -m comparisons.training",
        description="Train an experiment's learners on every process torchrun launches (checkpoints from rank 0); "
        "then run `python comparisons/run.py` with the same --config/--set/--out to evaluate them.",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    world = learners.distributed.world_from_env()
    try:
        cfg, _, out = config_from_args(args)
        plan = build_plan(cfg, out, progress=False)
        train_learners(plan, progress=not args.no_progress and world.is_main)
    except MetabayesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if world.is_main:
        print(f"trained on {world.size} process(es); evaluate with: python comparisons/run.py"
              + (f" --config {args.config}" if args.config else "")
              + (f" --profile {args.profile}" if args.profile else "")
              + "".join(f" --set {s}" for s in args.overrides) + f" --out {out}")
    return 0


__all__ = ["train_or_reuse", "train_learners", "main"]

if __name__ == "__main__":
    sys.exit(main())
