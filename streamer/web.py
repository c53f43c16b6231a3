"""The worker's web endpoints on Faust's web server (``web_port``): metrics and health.

``GET /metrics``  Prometheus text format (:mod:`workers.metrics`)
``GET /livez``    200 while the process runs and no ``predict()`` is past its deadline (503
                  then, and the worker exits); no dependency is checked
``GET /readyz``   200 when the model is loaded, Redis and the broker answer and no stage is
                  stalled in a retry loop, else 503, with
                  ``{"status", "checks": {"model", "redis", "broker", "pipeline"}}``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faust

from workers.health import CheckFailed, Readiness
from workers.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from streamer.agents import Resources

__all__ = ["install_web"]


def install_web(app: faust.App, resources: Resources) -> Readiness:
    """Add the three pages to ``app``; returns the readiness checks."""
    broker = resources.broker_probe

    async def model_loaded() -> bool:
        return resources.runner.ready

    async def pipeline() -> bool:
        if not resources.health.ready():
            raise CheckFailed(resources.health.describe())
        return True

    readiness = Readiness(
        {
            "model": model_loaded,
            "redis": resources.redis.ping,
            "broker": broker,
            "pipeline": pipeline,
        },
        timeout_s=2.0,
    )

    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        return view.bytes(
            resources.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/livez")
    async def livez(view: Any, request: Any) -> Any:
        if resources.runner.hung:
            return view.json({"status": "inference hung"}, status=503)
        if resources.media_watchdog.hung:
            return view.json({"status": "media warm-up hung"}, status=503)
        return view.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(view: Any, request: Any) -> Any:
        report = await readiness.report()
        return view.json(report.to_json(), status=200 if report.ready else 503)

    return readiness
