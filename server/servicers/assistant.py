"""The Assistant service: Generate, GenerateStream, Score, GetServerInfo."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from hybrid_assistant.server import convert
from hybrid_assistant.server.assistant import AssistantCore
from hybrid_assistant.server.core_types import GenerateOutcome
from hybrid_assistant.server.errors import grpc_errors, grpc_stream_errors
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc


class AssistantServicer(pb_grpc.AssistantServicer):
    def __init__(self, core: AssistantCore, server_info: Callable[[], pb.ServerInfo]) -> None:
        self._core = core
        self._server_info = server_info

    @grpc_errors
    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        async for item in self._core.generate(convert.generate_input(request)):
            if isinstance(item, GenerateOutcome):
                return convert.outcome_to_pb(item)
        raise AssertionError("generation ended without an outcome")

    @grpc_stream_errors
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        async for item in self._core.generate(convert.generate_input(request)):
            if isinstance(item, GenerateOutcome):
                yield pb.GenerateStreamResponse(summary=convert.outcome_to_pb(item))
            else:
                yield pb.GenerateStreamResponse(delta=item)

    @grpc_errors
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return convert.score_to_pb(await self._core.score(convert.score_input(request)))

    @grpc_errors
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerInfo:
        return self._server_info()
