"""The Open Inference Protocol's gRPC door: inference.GRPCInferenceService beside SentimentService.

Served on the same port and through the same interceptors (request ids, metrics, logs,
bearer token, TLS): ModelInfer reaches the MicroBatcher through
SentimentServicer.score_reviews, as Predict does, and its errors take the one
error -> status map (servicer.status_of). The tensors and their checks are
server.api.inference_protocol's; this module only converts protobuf messages.

    grpcurl -plaintext -d '{"model_name": "imdb-lstm", "inputs": [{"name": "review",
      "datatype": "BYTES", "shape": [1], "contents": {"bytes_contents": ["Z3JlYXQ="]}}]}'
      localhost:50051 inference.GRPCInferenceService/ModelInfer
"""

from __future__ import annotations

import grpc

from server.api import inference_protocol as protocol
from server.api.inference import grpc_predict_v2_pb2 as pb
from server.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from server.api.servicer import ModelDescription, RequestLimits, SentimentServicer, status_of
from server.errors import InvalidRequestError, ShuttingDownError

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Health, metadata and ModelInfer of the one model, `imdb-lstm`, at the version serving."""

    def __init__(
        self, sentiment: SentimentServicer, model: ModelDescription, limits: RequestLimits
    ):
        self._sentiment = sentiment  # its score_reviews and drain state are this door's too
        self._model = model
        self._limits = limits

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self._sentiment.draining)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=not self._sentiment.draining)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**protocol.server_metadata())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        found = protocol.model_metadata(self._model.version)
        return pb.ModelMetadataResponse(
            name=found["name"],
            versions=found["versions"],
            platform=found["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in found["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in found["outputs"]],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            if self._sentiment.draining:
                raise ShuttingDownError("the server is shutting down and takes no new reviews")
            result = await protocol.infer(
                inference_request_of(request),
                self._model,
                self._sentiment.score_reviews,
                max_reviews=self._limits.max_reviews_per_request,
                timeout_s=self._timeout_s(context),
            )
        except Exception as error:  # a ServiceError, or a bug that status_of logs
            code, message, trailers = status_of(error)
            await context.abort(code, message, trailing_metadata=trailers)  # raises
        # Raw in, raw out, as Triton answers (and tritonclient reads either).
        return response_of(result, request.id, raw=bool(request.raw_input_contents))

    async def _check_model(self, name: str, version: str, context) -> None:
        try:
            protocol.check_model(name, version, self._model.version)
        except Exception as error:
            code, message, trailers = status_of(error)
            await context.abort(code, message, trailing_metadata=trailers)  # raises

    def _timeout_s(self, context: grpc.aio.ServicerContext) -> float:
        """The server's default timeout, or the caller's deadline if that comes sooner."""
        timeout_s = self._limits.default_timeout_ms / 1000
        remaining_s = context.time_remaining()
        return timeout_s if remaining_s is None else min(timeout_s, remaining_s)


def inference_request_of(request: pb.ModelInferRequest) -> protocol.InferenceRequest:
    """The protocol's plain request; the contents' form (typed or raw) is checked here."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequestError(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs; "
            "give one for each input, in the order of `inputs`"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        typed = [field.name for field, _ in tensor.contents.ListFields()]
        if raw and typed:
            raise InvalidRequestError(
                f'input "{tensor.name}" has contents ({", ".join(typed)}) as well as '
                "raw_input_contents; use one or the other"
            )
        if set(typed) - {"bytes_contents"}:
            raise InvalidRequestError(
                f'input "{tensor.name}" has {", ".join(typed)}; a BYTES tensor\'s data goes in '
                "contents.bytes_contents (or raw_input_contents)"
            )
        inputs.append(
            protocol.InputTensor(
                name=tensor.name,
                datatype=tensor.datatype,
                shape=tuple(tensor.shape),
                elements=tensor.contents.bytes_contents,
                raw=raw[index] if raw else None,
            )
        )
    return protocol.InferenceRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        outputs=[output.name for output in request.outputs],
    )


def response_of(result: protocol.InferenceResult, request_id: str, raw: bool):
    """The ModelInferResponse of `result`: typed contents, or raw_output_contents if `raw`."""
    response = pb.ModelInferResponse(
        model_name=protocol.MODEL_NAME, model_version=str(result.model_version), id=request_id
    )
    for name in result.outputs:
        output = response.outputs.add(name=name, shape=result.shape)
        if name == protocol.SCORE:
            output.datatype = protocol.FP32
            if raw:
                response.raw_output_contents.append(protocol.raw_fp32(result.scores))
            else:
                output.contents.fp32_contents.extend(result.scores)
        else:
            output.datatype = protocol.BYTES
            labels = [label.encode() for label in result.labels]
            if raw:
                response.raw_output_contents.append(protocol.join_bytes(labels))
            else:
                output.contents.bytes_contents.extend(labels)
    return response


def add_to_server(
    sentiment: SentimentServicer,
    model: ModelDescription,
    limits: RequestLimits,
    server: grpc.aio.Server,
) -> InferenceServicer:
    """Registers GRPCInferenceService on `server`, beside SentimentService."""
    servicer = InferenceServicer(sentiment, model, limits)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return servicer
