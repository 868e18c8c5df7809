"""The HTTP/JSON edge (`--http-port`): the seed's POST /predict, health probes, the demo page.

aiohttp serves it from the grpc.aio server's own event loop, so no second
server process or thread: /predict calls SentimentServicer.score_reviews, the
very checks, limits and MicroBatcher that gRPC's Predict uses, and HTTP and
gRPC reviews share batches. The contract is server/api/openapi.json, served at
/openapi.json; the page is server/api/static/, served as is (no build step).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from server.api.servicer import ModelDescription, SentimentServicer
from server.errors import (
    DeadlineExceededError,
    ExplainUnavailableError,
    InferenceError,
    InvalidRequestError,
    InvalidReviewError,
    ModelNotFoundError,
    QueueFullError,
    ShuttingDownError,
    StartupError,
)
from server.explanations.explain import Explanation

# Named as before the subpackages, so that log filters still match.
logger = logging.getLogger("server.http_api")

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
OPENAPI_PATH = PACKAGE_DIR / "openapi.json"
JSON_TYPE = "application/json"
# The page loads nothing from elsewhere; the browser enforces it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Time for a finished handler's response to be written once the drain has waited.
_FLUSH_TIMEOUT_S = 1.0
# aiohttp's own errors (no route, wrong method) as error codes; the rest are the service's.
_AIOHTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@dataclass(frozen=True)
class HttpError:
    """An error as the HTTP edge answers it: status, JSON code and message, extra headers."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status, headers=dict(self.headers))


def http_error_of(error: BaseException) -> HttpError:
    """The one place an error becomes an HTTP answer; mirrors servicer.status_of."""
    if isinstance(error, (InvalidReviewError, InvalidRequestError)):
        return HttpError(400, "invalid_request", str(error))
    if isinstance(error, QueueFullError):
        # Retry-After counts whole seconds; the message keeps the finer hint.
        retry_after_s = max(1, math.ceil(error.retry_after_ms / 1000))
        message = f"{error} (retry after about {error.retry_after_ms} ms)"
        return HttpError(429, "queue_full", message, (("Retry-After", str(retry_after_s)),))
    if isinstance(error, DeadlineExceededError):
        return HttpError(504, "deadline_exceeded", str(error))
    if isinstance(error, ShuttingDownError):
        return HttpError(503, "unavailable", str(error))
    if isinstance(error, InferenceError):
        return HttpError(500, "internal", str(error))
    if isinstance(error, ExplainUnavailableError):
        return HttpError(501, "explain_unavailable", str(error))
    if isinstance(error, ModelNotFoundError):
        return HttpError(404, "not_found", str(error))
    if isinstance(error, web.HTTPException) and error.status in _AIOHTTP_CODES:
        return HttpError(error.status, _AIOHTTP_CODES[error.status], _aiohttp_message(error))
    logger.error("unexpected error reached the HTTP edge", exc_info=error)
    return HttpError(500, "internal", f"internal error: {type(error).__name__}")


def _aiohttp_message(error: web.HTTPException) -> str:
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return f"{error.method} is not allowed here; use {allowed} (see /openapi.json)"
    if isinstance(error, web.HTTPNotFound):
        return "no such path (see /openapi.json)"
    return error.text or error.reason


class HttpApi:
    """The aiohttp application and its listener: `await start(host, port)`, `await stop(grace_s)`.

    Stopping drains: /readyz and new /predict calls answer 503 while the
    requests already in flight finish (up to grace_s); then the port closes.
    """

    def __init__(
        self,
        servicer: SentimentServicer,
        model: ModelDescription,
        *,
        timeout_s: float,
        max_body_bytes: int,
    ):
        self._servicer = servicer
        self._model = model
        self._timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._openapi = OPENAPI_PATH.read_bytes()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._draining = False
        self._retiring = False  # stop_listening() was called: every answer closes its connection
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.port = 0
        # More routes in this application, added before start() (kserve_http's /v2).
        self.extra_routes: list[web.RouteDef] = []

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.max_body_bytes, middlewares=[self._track_and_map_errors]
        )
        app.router.add_post("/predict", self.predict)
        app.router.add_post("/explain", self.explain)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_routes(self.extra_routes)
        app.router.add_get("/", _static_file("index.html", "text/html; charset=utf-8"))
        app.router.add_get("/static/app.css", _static_file("app.css", "text/css; charset=utf-8"))
        app.router.add_get(
            "/static/app.js", _static_file("app.js", "text/javascript; charset=utf-8")
        )
        app.on_response_prepare.append(_add_security_headers)
        return app

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listens on host:port (all interfaces for "[::]"); returns the bound port.

        `reuse_port`: share the port with the other front processes (SO_REUSEPORT)."""
        # handler_cancellation: a caller that hangs up cancels its handler, and so
        # its queued reviews, as a cancelled gRPC call does.
        runner = web.AppRunner(
            self.app(),
            access_log=None,  # no line per request: under load it would drown the server log
            handler_cancellation=True,
            shutdown_timeout=_FLUSH_TIMEOUT_S,
        )
        await runner.setup()
        # "[::]" is gRPC's all-interfaces address; asyncio takes None for that, IPv4 and IPv6.
        bind_host = host.strip("[]") or None
        site = web.TCPSite(
            runner, None if bind_host == "::" else bind_host, port, reuse_port=reuse_port or None
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"cannot serve HTTP on {host}:{port}: {exc}") from exc
        self._runner, self._site, self.port = runner, site, site.port
        return self.port

    async def stop_listening(self) -> None:
        """Takes no new connections, and closes each open one after its next answer, so its
        client reconnects elsewhere (another front on the port); requests are still served."""
        self._retiring = True
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self, grace_s: float) -> None:
        """Answers 503 to new work, waits up to grace_s for requests in flight, then closes."""
        self._draining = True
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except asyncio.TimeoutError:
            logger.warning(
                "%d HTTP requests still in flight after %.1f s", self._in_flight, grace_s
            )
        await runner.cleanup()

    @property
    def ready(self) -> bool:
        return self._runner is not None and not self._draining

    @web.middleware
    async def _track_and_map_errors(self, request: web.Request, handler) -> web.StreamResponse:
        self._in_flight += 1
        self._idle.clear()
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a ServiceError, aiohttp's 404/405/413, or a bug
            response = http_error_of(error).response()
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        if self._retiring:
            response.force_close()
        return response

    # -- routes --------------------------------------------------------------------

    async def predict(self, request: web.Request) -> web.Response:
        """{"review": text} -> {"sentiment", "score"}; {"reviews": [...]} -> {"results", ...}."""
        if self._draining:
            raise ShuttingDownError("the server is shutting down and takes no new reviews")
        reviews, single = reviews_in(await self._json_body(request))
        scores = await self._servicer.score_reviews(reviews, self._timeout_s)
        results = [self._result(score) for score in scores]
        if single:
            return web.json_response(results[0])
        # A version swap during the request can split it over two versions: the newer is named.
        version = max(getattr(s, "model_version", self._model.version) for s in scores)
        return web.json_response({"results": results, "model_version": version})

    async def explain(self, request: web.Request) -> web.Response:
        """{"review": text} -> the score, label and each word's span and attribution."""
        if self._draining:
            raise ShuttingDownError("the server is shutting down and takes no new reviews")
        body = await self._json_body(request)
        if isinstance(body, dict) and "reviews" in body:
            raise InvalidRequestError('/explain takes one review: send {"review": "text"}')
        (review,), _ = reviews_in(body)
        explanation = await self._servicer.explain_review(review, self._timeout_s)
        return web.json_response(explanation_json(explanation))

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process answers (also while draining)."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 only while serving, so a load balancer stops sending during a drain."""
        if not self.ready:
            raise ShuttingDownError("the server is draining and takes no new reviews")
        model = self._model
        return web.json_response(
            {"status": "ready", "model": model.name, "model_version": model.version}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type=JSON_TYPE)

    # -- helpers -------------------------------------------------------------------

    async def _json_body(self, request: web.Request) -> Any:
        if request.content_type != JSON_TYPE:
            sent = request.headers.get("Content-Type", "none")
            raise InvalidRequestError(f"the Content-Type is {sent!r}; send {JSON_TYPE}")
        # Refused before reading when the length is declared; read() checks a chunked body.
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise self._too_large(f"{declared} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large("longer than that") from None
        try:
            return json.loads(body)
        except RecursionError:
            raise InvalidRequestError("the body is not valid JSON: it nests too deeply") from None
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer too long
            raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None

    def _too_large(self, size: str) -> web.HTTPRequestEntityTooLarge:
        message = (
            f"the request body is {size}; the limit is {self.max_body_bytes} bytes "
            "(the gRPC message limit: --max-reviews-per-request x --max-review-bytes)"
        )
        return web.HTTPRequestEntityTooLarge(max_size=self.max_body_bytes, text=message)

    def _result(self, score: float) -> dict[str, Any]:
        # A VersionedScore (server.scoring.versions) carries the threshold of the version that
        # made it.
        threshold = getattr(score, "decision_threshold", self._model.decision_threshold)
        return {
            "sentiment": "Positive" if score >= threshold else "Negative",
            "score": float(score),
        }


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    """An Explanation in /predict's JSON conventions ("sentiment", "score"), words in order."""
    return {
        "sentiment": "Positive" if explanation.is_positive else "Negative",
        "score": explanation.score,
        "model_version": explanation.model_version,
        "words": [
            {
                "start": w.start,
                "end": w.end,
                "token": w.token,
                "status": w.status,
                "attribution": w.attribution,
            }
            for w in explanation.words
        ],
        "method": {
            "name": explanation.method,
            "baseline": explanation.baseline,
            "baseline_score": explanation.baseline_score,
            "steps": explanation.steps,
            "convergence_delta": explanation.convergence_delta,
        },
    }


def reviews_in(body: Any) -> tuple[list[str], bool]:
    """The reviews in a /predict body, and whether it used the seed's {"review": text} shape.

    Checks only the JSON shape; the servicer checks the reviews themselves
    (empty, too long, too many) exactly as for gRPC.
    """
    if not isinstance(body, dict):
        raise InvalidRequestError(f"the body must be a JSON object, not {_json_type(body)}")
    if ("review" in body) == ("reviews" in body):
        which = "both" if "review" in body else "neither"
        raise InvalidRequestError(
            f'the body has {which} of "review" and "reviews"; send exactly one: '
            '{"review": "text"} or {"reviews": ["text", ...]}'
        )
    if "review" in body:
        review = body["review"]
        if not isinstance(review, str):
            raise InvalidRequestError(f'"review" must be a string, not {_json_type(review)}')
        return [_encodable(review, "review")], True
    reviews = body["reviews"]
    if not isinstance(reviews, list):
        raise InvalidRequestError(
            f'"reviews" must be an array of strings, not {_json_type(reviews)}'
        )
    for index, review in enumerate(reviews):
        if not isinstance(review, str):
            raise InvalidRequestError(f"review {index} must be a string, not {_json_type(review)}")
        _encodable(review, f"review {index}")
    return reviews, False


def _encodable(review: str, name: str) -> str:
    # JSON can spell a lone surrogate ("\ud800"); protobuf strings never hold one.
    try:
        review.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{name} is not valid Unicode: {exc.object[exc.start : exc.end]!r} at "
            f"character {exc.start} is a lone surrogate"
        ) from None
    return review


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _static_file(name: str, content_type: str):
    path = STATIC_DIR / name
    # Named, not guessed: mimetypes reads /etc/mime.types, which differs between machines.
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}

    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers=headers)

    return serve


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
