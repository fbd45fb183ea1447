"""Step: route and prioritise each post by the rules file (field `triage`).

Runs after the understanding step, inside the same Beam pipeline, so batch and stream route alike.
The "model" is the rules file; it is re-read when it changes (routing.reload_s), which is how the
streaming job takes edited rules without a restart. The brand's own posts get `{"brand": true}` and no
queue, priority or deadline (routing.route).
"""
from __future__ import annotations

from typing import Sequence

from triage.routing import ReloadingRules, route
from pipeline.steps.base import EnrichmentStep, Post


class Route(EnrichmentStep[ReloadingRules]):
    name = "routing"
    label = "RouteAndPrioritize"
    requires = ("language", "sentiment", "intent", "pii")
    provides = ("triage",)

    def load_model(self) -> ReloadingRules:
        return ReloadingRules(self.settings.routing.rules_file, self.settings.routing.reload_s)

    def enrich(self, posts: Sequence[Post], model: ReloadingRules) -> list[Post]:
        rules = model.current()
        return [{**post, "triage": route(rules, post)} for post in posts]

    def version(self, model: ReloadingRules) -> str:
        return model.rules.version
