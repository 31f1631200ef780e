"""The Adapters service: ListAdapters, LoadAdapter, UnloadAdapter (the last two are admin calls)."""

from __future__ import annotations

import grpc

from hybrid_assistant.server import convert
from hybrid_assistant.server.adapter_registry import AdapterRegistry
from hybrid_assistant.server.errors import InvalidArgument, grpc_errors
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc


class AdaptersServicer(pb_grpc.AdaptersServicer):
    def __init__(self, registry: AdapterRegistry) -> None:
        self._registry = registry

    @grpc_errors
    async def ListAdapters(
        self, request: pb.ListAdaptersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAdaptersResponse:
        return pb.ListAdaptersResponse(
            adapters=[convert.adapter_info_to_pb(i) for i in self._registry.infos()]
        )

    @grpc_errors
    async def LoadAdapter(
        self, request: pb.LoadAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadAdapterResponse:
        if not request.name or not request.path:
            raise InvalidArgument(f"name ({request.name!r}) and path ({request.path!r}) are both required")
        replaced = request.name in self._registry.names()
        info = await self._registry.load(request.name, request.path, replace=request.replace, pin=request.pin)
        return pb.LoadAdapterResponse(adapter=convert.adapter_info_to_pb(info), replaced=replaced)

    @grpc_errors
    async def UnloadAdapter(
        self, request: pb.UnloadAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadAdapterResponse:
        if not request.name:
            raise InvalidArgument("name is required")
        deferred, in_flight = await self._registry.unload(request.name)
        return pb.UnloadAdapterResponse(deferred=deferred, in_flight=in_flight)
