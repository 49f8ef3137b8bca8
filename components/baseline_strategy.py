"""Evaluator baseline: the latest blessed model *other than the candidate itself*.

TFX's LatestBlessedModelStrategy returns the newest blessed Model. On a re-run with no
new data the Trainer is a cache hit, so its candidate is the very model the previous
run blessed: the stock strategy would make it its own baseline, the Evaluator's inputs
would change, it would re-run, bless again, and the Pusher would push a duplicate
version. Excluding the candidate keeps the baseline the previous run used, so an
unchanged re-run is a cache hit from ExampleGen to Pusher, and a new model is still
compared with the one in production.
"""
from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts

MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
CANDIDATE_KEY = "candidate"


class LatestBlessedOtherModelStrategy(resolver.ResolverStrategy):
    """Resolver inputs: `model` (all Models), `model_blessing` (all blessings), `candidate`
    (this run's Trainer output). Outputs the newest blessed Model that is not the candidate,
    with its blessing, or nothing when there is none."""

    def resolve_artifacts(
        self, store, input_dict: Dict[str, List[types.Artifact]]
    ) -> Optional[Dict[str, List[types.Artifact]]]:
        empty = {key: [] for key in input_dict}
        models = list(input_dict.get(MODEL_KEY, []))
        blessings = input_dict.get(BLESSING_KEY, [])
        candidates = {a.id for a in input_dict.get(CANDIDATE_KEY, [])}
        if not models or not blessings:
            return empty
        blessed = {
            b.get_int_custom_property("current_model_id"): b
            for b in blessings
            if b.get_int_custom_property("blessed") == 1
        }
        for model in sorted(models, key=lambda a: a.id, reverse=True):
            if model.id in blessed and model.id not in candidates:
                result = dict(empty)
                result[MODEL_KEY] = [model]
                result[BLESSING_KEY] = [blessed[model.id]]
                result[CANDIDATE_KEY] = list(input_dict.get(CANDIDATE_KEY, []))
                return result
        return empty


def baseline_resolver(candidate_channel):
    """The Resolver node feeding the Evaluator's `baseline_model`."""
    from tfx import v1 as tfx

    return tfx.dsl.Resolver(
        strategy_class=LatestBlessedOtherModelStrategy,
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
        candidate=candidate_channel,
    ).with_id("latest_blessed_model_resolver")
