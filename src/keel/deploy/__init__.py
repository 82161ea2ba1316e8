"""Safe deployment: who serves an endpoint (primary, shadow, canary, A/B arms), every transition
with its author and reason in the metadata store, the gates a canary must pass, and the
statistics of A/B tests.

    from keel import deploy
    deploy.start_canary(project, "fraud", "fraud@4", plan=[1, 5, 10, 25, 50, 100], hold=86400)
    deploy.watch(project, "fraud")                  # gates each step; rolls back on failure
    deploy.get_deployment(project, "fraud").spec    # who serves it now
    deploy.sample_size(baseline=0.04, mde=0.10)     # units per arm to see a 10 % lift

Names resolve lazily on first use, like ``keel``'s own. The report and the history are
functions of the modules of the same name: ``keel.deploy.report.report(project, "fraud")``,
``keel.deploy.history.history(project, "fraud")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ABReport": "keel.deploy.stats_ab",
    "CanaryDecision": "keel.deploy.gates",
    "DeployReport": "keel.deploy.report",
    "DeploymentSpec": "keel.deploy.spec",
    "EffectEstimate": "keel.deploy.stats",
    "GateConfig": "keel.deploy.gates",
    "Guardrail": "keel.deploy.stats_guardrails",
    "SRMResult": "keel.deploy.stats",
    "TickResult": "keel.deploy.controller",
    "advance": "keel.deploy.state",
    "analyze_ab": "keel.deploy.stats_ab",
    "check_guardrails": "keel.deploy.stats_guardrails",
    "deploy": "keel.deploy.state",
    "get_deployment": "keel.deploy.records",
    "mean_test": "keel.deploy.stats",
    "pause": "keel.deploy.state",
    "promote": "keel.deploy.state",
    "proportion_test": "keel.deploy.stats",
    "resume": "keel.deploy.state",
    "rollback": "keel.deploy.state",
    "sample_size": "keel.deploy.stats",
    "served_at": "keel.deploy.history",
    "srm_check": "keel.deploy.stats",
    "start_ab": "keel.deploy.state",
    "start_canary": "keel.deploy.state",
    "start_shadow": "keel.deploy.state",
    "stop": "keel.deploy.state",
    "tick": "keel.deploy.controller",
    "watch": "keel.deploy.controller",
}

__all__ = [
    "ABReport",
    "CanaryDecision",
    "DeployReport",
    "DeploymentSpec",
    "EffectEstimate",
    "GateConfig",
    "Guardrail",
    "SRMResult",
    "TickResult",
    "advance",
    "analyze_ab",
    "check_guardrails",
    "deploy",
    "get_deployment",
    "mean_test",
    "pause",
    "promote",
    "proportion_test",
    "resume",
    "rollback",
    "sample_size",
    "served_at",
    "srm_check",
    "start_ab",
    "start_canary",
    "start_shadow",
    "stop",
    "tick",
    "watch",
]

if TYPE_CHECKING:
    from keel.deploy.controller import TickResult, tick, watch
    from keel.deploy.gates import CanaryDecision, GateConfig
    from keel.deploy.history import served_at
    from keel.deploy.records import get_deployment
    from keel.deploy.report import DeployReport
    from keel.deploy.spec import DeploymentSpec
    from keel.deploy.state import (
        advance,
        deploy,
        pause,
        promote,
        resume,
        rollback,
        start_ab,
        start_canary,
        start_shadow,
        stop,
    )
    from keel.deploy.stats import (
        EffectEstimate,
        SRMResult,
        mean_test,
        proportion_test,
        sample_size,
        srm_check,
    )
    from keel.deploy.stats_ab import ABReport, analyze_ab
    from keel.deploy.stats_guardrails import Guardrail, check_guardrails


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
