"""Tell a broken model from a bad input (a circuit breaker around ``predict``).

A batch is classified in one call. If that call fails (raises, or returns output that breaks
the :class:`~model.base.Classifier` contract: wrong count, unknown label, scores that are not
finite or do not sum to 1), a text-only canary is tried: a broken model fails it too, and costs
two calls, not a bisection. Otherwise the failing comments are isolated by **bisection**: halves
are retried recursively, so one bad comment in a batch of 64 costs the batch, the canary and
2·log2(64) = 12 calls, not 64. Then the guard decides whose fault it is:

* **the input's**: a few comments fail alone while the model still works (a text-only canary
  succeeds, the batch mostly succeeded). They are returned as failed; the processor
  dead-letters them as ``processing_failed`` and the stream goes on.
* **the model's** (:class:`ModelUnavailable`): more than ``failure_ratio`` of a batch of at
  least :data:`RATIO_MIN_BATCH` failed, the canary fails too, or :data:`STREAK_LIMIT` comments in
  a row failed with no success in between. Then nothing is dead-lettered and nothing is
  acknowledged: the guard retries the whole batch with backoff, reports the stage ``model`` as
  stalled (``/readyz`` fails) and, once that has lasted ``exit_after_s``, raises
  :class:`ModelFailed`: the worker exits non-zero and the orchestrator restarts it (the input is
  redelivered). This is arroyo's ``DlqLimit`` idea: a consumer that would dead-letter
  everything is broken itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from model.base import MODALITIES, Classifier, ClassOutput, CommentInput
from schemas.errors import CommentflowError, RetriableError
from workers.health import PipelineHealth
from workers.inference import InferenceRunner
from workers.metrics import PipelineMetrics
from workers.retry import Backoff

__all__ = [
    "RATIO_MIN_BATCH",
    "STREAK_LIMIT",
    "InvalidModelOutput",
    "ModelFailed",
    "ModelGuard",
    "ModelUnavailable",
    "validate_outputs",
]

log = logging.getLogger("commentflow.model_guard")

#: The ratio rule applies to batches of at least this many comments (below: the canary decides).
RATIO_MIN_BATCH = 4
#: This many comments failing in a row, across batches, means the model is broken.
STREAK_LIMIT = 16
_CANARY = CommentInput(text="ok")


class InvalidModelOutput(ValueError):
    """``predict()`` returned something that breaks the classifier contract."""


class ModelUnavailable(RetriableError):
    """The model, not the input, fails: retry the batch later, never dead-letter it."""


class ModelFailed(CommentflowError):
    """The model kept failing for ``exit_after_s``: the worker must exit (non-zero)."""


def validate_outputs(
    outputs: object, n: int, labels: Sequence[str]
) -> list[ClassOutput]:
    """``outputs`` if it is ``n`` valid :class:`ClassOutput`; else :class:`InvalidModelOutput`."""
    if not isinstance(outputs, list) or len(outputs) != n:
        raise InvalidModelOutput(f"expected a list of {n} outputs")
    for out in outputs:
        if not isinstance(out, ClassOutput) or out.label not in labels:
            raise InvalidModelOutput("an output has no known label")
        if set(out.scores) != set(labels):
            raise InvalidModelOutput("scores do not name every label")
        values = [float(v) for v in out.scores.values()]
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise InvalidModelOutput("scores are not probabilities (NaN, inf or out of range)")
        if abs(sum(values) - 1.0) > 1e-3:
            raise InvalidModelOutput("scores do not sum to 1")
        if not set(out.modalities) <= set(MODALITIES):
            raise InvalidModelOutput("unknown modality")
    return outputs


class ModelGuard:
    """Classify batches through ``runner``; isolate bad comments; open on a broken model."""

    def __init__(
        self,
        runner: InferenceRunner,
        *,
        failure_ratio: float = 0.5,
        exit_after_s: float = 120.0,
        backoff: Backoff | None = None,
        health: PipelineHealth | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self._runner = runner
        self._ratio = failure_ratio
        self._exit_after = exit_after_s
        self._backoff = backoff or Backoff(0.5, 10.0)
        self.health = health if health is not None else PipelineHealth()
        self.metrics = metrics if metrics is not None else PipelineMetrics()
        self._streak = 0
        self.calls = 0  # predict() calls made, for tests and logs

    async def classify(
        self, inputs: Sequence[CommentInput]
    ) -> tuple[list[ClassOutput | None], dict[int, BaseException]]:
        """One output per input (``None`` where it failed alone) and the isolated failures.

        Retries while the model is unavailable; raises :class:`ModelFailed` once that has
        lasted ``exit_after_s``.
        """
        attempt = 0
        while True:
            try:
                result = await self._attempt(inputs)
            except ModelUnavailable as exc:
                attempt += 1
                self.metrics.model_failures.labels("unavailable").inc()
                self.health.stall("model", str(exc))
                failing_s = self.health.stalled_for("model")
                if failing_s >= self._exit_after:
                    raise ModelFailed(
                        f"the model has failed for {failing_s:.0f} s ({exc}); exiting"
                    ) from exc
                delay = min(self._backoff.delay(attempt), max(0.0, self._exit_after - failing_s))
                log.error(
                    "the model is failing (%s): batch of %d not acknowledged, retry %d in "
                    "%.1fs (exit after %.0fs)",
                    exc,
                    len(inputs),
                    attempt,
                    delay,
                    self._exit_after,
                )
                await asyncio.sleep(delay)
                continue
            self.health.recover("model")
            return result

    async def _attempt(
        self, inputs: Sequence[CommentInput]
    ) -> tuple[list[ClassOutput | None], dict[int, BaseException]]:
        n = len(inputs)
        outputs: list[ClassOutput | None] = [None] * n
        failed: dict[int, BaseException] = {}
        if not n:
            return outputs, failed
        try:
            got = await self._predict(list(inputs))
        except Exception as exc:  # noqa: BLE001 - judged below: the model's fault or the input's
            first_error: BaseException = exc
        else:
            self._streak = 0
            return list(got), failed
        # A broken model fails the canary too: two calls, not a bisection of the whole batch.
        try:
            await self._predict([_CANARY])
        except Exception as exc:
            raise ModelUnavailable(
                f"the batch and the canary failed ({type(exc).__name__})"
            ) from exc
        if n == 1:
            failed[0] = first_error
        else:
            mid = n // 2
            for half in (list(range(mid)), list(range(mid, n))):
                await self._bisect(half, inputs, outputs, failed, n)
        self.metrics.model_failures.labels("isolated").inc(len(failed))
        for i in range(n):  # consecutive failures, carried across batches
            self._streak = self._streak + 1 if i in failed else 0
        if self._streak >= STREAK_LIMIT:  # stays open until a comment succeeds again
            raise ModelUnavailable(f"{STREAK_LIMIT} comments in a row failed in the model")
        log.warning(
            "%d of %d comments failed alone in the model (%s); dead-lettering them",
            len(failed),
            n,
            type(next(iter(failed.values()), first_error)).__name__,
        )
        return outputs, failed

    async def _bisect(
        self,
        indices: list[int],
        inputs: Sequence[CommentInput],
        outputs: list[ClassOutput | None],
        failed: dict[int, BaseException],
        n: int,
    ) -> None:
        try:
            got = await self._predict([inputs[i] for i in indices])
        except Exception as exc:  # noqa: BLE001 - any failure is isolated, then judged
            if len(indices) == 1:
                failed[indices[0]] = exc
                if n >= RATIO_MIN_BATCH and len(failed) > self._ratio * n:
                    raise ModelUnavailable(
                        f"more than {self._ratio:.0%} of a batch of {n} failed in the model"
                    ) from exc
                return
            mid = len(indices) // 2
            await self._bisect(indices[:mid], inputs, outputs, failed, n)
            await self._bisect(indices[mid:], inputs, outputs, failed, n)
            return
        for i, out in zip(indices, got, strict=True):
            outputs[i] = out

    async def _predict(self, batch: list[CommentInput]) -> list[ClassOutput]:
        self.calls += 1
        try:
            classifier: Classifier = self._runner.classifier
            return validate_outputs(
                await self._runner.predict(batch), len(batch), classifier.labels
            )
        except Exception:
            self.metrics.model_failures.labels("call").inc()
            raise
