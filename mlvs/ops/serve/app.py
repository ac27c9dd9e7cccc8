"""The HTTP interface of the scoring service (FastAPI): `/health`, `/model`, `/predict`, and OpenAPI.

Every request body is untrusted: it must declare its length (at most
`MAX_BODY_BYTES`), be JSON, and match the record schema; anything else is answered
with one status and a JSON body naming the record and the column, and the values
sent are never logged nor echoed back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlvs.logs import get_logger
from mlvs.ml.scoring import (
    MAX_RECORDS,
    ScoringRequest,
    ScoringResponse,
    decisions,
    record_problems,
    records_frame,
)
from mlvs.ops.serve.follow import ServingState
from mlvs.ops.serve.loader import LoadedModel

log = get_logger("serve")

# 10,000 records of about 300 bytes each, with room to spare: a bound on what one request can cost.
MAX_BODY_BYTES = 8 * 1024 * 1024

# A request of at most this many records, when no other is being scored, is scored on the
# event loop's thread: a few milliseconds of the model, less than handing it to a worker.
INLINE_RECORDS = 10

_ERROR = {"description": "the request names what is wrong", "content": {"application/json": {}}}


class _BodyLimit:
    """Refuses a body larger than `MAX_BODY_BYTES`, or of undeclared length, before it is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            length = None
            for key, value in scope["headers"]:
                if key == b"content-length":
                    length = int(value) if value.isdigit() else -1
            problem = None
            if length is None:
                status, problem = 411, "the request must declare its Content-Length"
            elif length < 0 or length > MAX_BODY_BYTES:
                status, problem = 413, f"the body must be at most {MAX_BODY_BYTES} bytes"
            if problem is not None:
                response = JSONResponse({"detail": problem, "errors": []}, status_code=status)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _OpenRequests:
    """Counts the HTTP requests the service has begun and not yet answered."""

    def __init__(self) -> None:
        self.open = 0

    def middleware(self, app: Any) -> Any:
        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            self.open += 1
            try:
                await app(scope, receive, send)
            finally:
                self.open -= 1

        return counted


def _json(body: dict[str, Any], status: int = 200) -> Response:
    # json.dumps straight to bytes: FastAPI's generic encoder costs more than the encoding itself.
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _probabilities(model: Any, records: list[Any]) -> Any:
    return model.predict_proba(records_frame(records))[:, 1]


def create_app(state: ServingState) -> FastAPI:
    """The service's ASGI application over `state`, the model it serves."""
    app = FastAPI(
        title="mlvs scoring service",
        summary=f"Churn probabilities from {state.name}@{state.alias}, verified before it is served.",
        version="1",
    )

    # One request at a time has the alias read; the others that need it wait for its answer.
    refreshing = asyncio.Lock()
    # Requests begun and not yet answered (the event loop's own count: only its thread touches it).
    requests = _OpenRequests()

    async def served_now() -> LoadedModel | None:
        """The model to answer with: the version the alias points at now, once swapped in.

        When the registry changed since the alias was last read, or the version it points
        at is still being loaded, the request waits for that check (and so for the swap):
        an answer never comes from a version the alias had left when the request began.
        """
        if state.needs_check():
            async with refreshing:
                if state.needs_check():
                    await run_in_threadpool(state.check)
        return state.current

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = record_problems(list(error.errors()))
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            # FastAPI reads only a JSON body as JSON: say so rather than "not an object".
            problems = [
                {
                    "record": None,
                    "column": None,
                    "problem": "the body must be JSON, sent with Content-Type: application/json",
                }
            ]
        first = problems[0] if problems else {"record": None, "column": None, "problem": "invalid"}
        where = ", ".join(
            part
            for part in (
                f"record {first['record']}" if first["record"] is not None else "",
                f"column {first['column']!r}" if first["column"] is not None else "",
            )
            if part
        )
        detail = f"{where}: {first['problem']}" if where else str(first["problem"])
        if len(problems) > 1:
            detail += f" (and {len(problems) - 1} more)"
        return _json({"detail": detail, "errors": problems[:100]}, 422)

    @app.get("/health", summary="200 while a verified model is served; names a refused version")
    async def health() -> Response:
        status, body = state.health()
        return _json(body, status)

    @app.get(
        "/model",
        summary="The model being served: name, alias, version, SHA-256, when it was loaded",
        responses={503: _ERROR},
    )
    async def model() -> Response:
        current = await served_now()
        if current is None:
            return _json({"detail": "no verified model is loaded yet; see /health"}, 503)
        return _json(current.describe())

    @app.post(
        "/predict",
        summary=f"Churn probability and decision for up to {MAX_RECORDS} customers",
        response_model=ScoringResponse,
        responses={422: _ERROR, 503: _ERROR},
    )
    async def predict(body: ScoringRequest) -> Response:
        # The one read of the reference: this request is scored by this model to its end.
        served = await served_now()
        if served is None:
            return _json({"detail": "no verified model is loaded yet; see /health"}, 503)
        try:
            if requests.open == 1 and len(body.records) <= INLINE_RECORDS:
                # Alone and small: scored right here. A worker thread costs two thread
                # wake-ups, milliseconds on a busy machine (profiled: 4.3 of the 9.5 ms a
                # one-record request took with the model's own time taken out), and no
                # other request would have run meanwhile anyway. With others begun, they
                # share the cores: scikit-learn's tree code releases the GIL.
                probabilities = _probabilities(served.model, body.records)
            else:
                # In a worker thread: the event loop keeps reading requests meanwhile, and
                # scikit-learn's tree code, which releases the GIL, can use a second core.
                probabilities = await run_in_threadpool(_probabilities, served.model, body.records)
        # The schema was checked; still, a model error must never crash the service.
        except Exception as error:
            log.error(
                "version %s could not score a request of %d record(s): %s",
                served.version,
                len(body.records),
                type(error).__name__,
            )
            return _json({"detail": "the model could not score these records"}, 500)
        return _json(
            {
                "model_version": served.version,
                "predictions": decisions(probabilities, served.decision_threshold),
            }
        )

    app.add_middleware(_BodyLimit)
    # Outermost: a request counts from its first byte, its body not yet read.
    app.add_middleware(requests.middleware)
    return app
