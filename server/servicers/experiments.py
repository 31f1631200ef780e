"""The Experiments gRPC service: create, update (admin), list, feedback, reports, log export (admin).

Each method validates what only the wire can get wrong, calls the transport-free
:class:`~hybrid_assistant.server.experiments.service.ExperimentManager` and converts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from hybrid_assistant.server.errors import InvalidArgument, grpc_errors, grpc_stream_errors
from hybrid_assistant.server.experiments import convert
from hybrid_assistant.server.experiments.service import ExperimentManager
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc


class ExperimentsServicer(pb_grpc.ExperimentsServicer):
    def __init__(self, service: ExperimentManager, max_top_k: int) -> None:
        self._service = service
        self._max_top_k = max_top_k

    @grpc_errors
    async def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        experiment = convert.experiment_from_pb(request.experiment, self._max_top_k)
        return convert.experiment_to_pb(await self._service.create(experiment))

    @grpc_errors
    async def UpdateExperiment(
        self, request: pb.UpdateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        if not request.name:
            raise InvalidArgument("name is required")
        if request.state != pb.EXPERIMENT_STATE_UNSPECIFIED and request.state not in convert.STATE_FROM_PB:
            raise InvalidArgument(f"state is {request.state}; expected RUNNING, PAUSED or STOPPED")
        if request.state == pb.EXPERIMENT_STATE_UNSPECIFIED and not request.weights:
            raise InvalidArgument("nothing to update: set state and/or weights")
        state = convert.STATE_FROM_PB.get(request.state)
        experiment = await self._service.update(request.name, state, dict(request.weights))
        return convert.experiment_to_pb(experiment)

    @grpc_errors
    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExperimentsResponse:
        return pb.ListExperimentsResponse(
            experiments=[convert.experiment_to_pb(e) for e in self._service.list()]
        )

    @grpc_errors
    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordFeedbackResponse:
        duplicate = await self._service.record_feedback(request.request_id, request.metric, request.value)
        return pb.RecordFeedbackResponse(duplicate=duplicate)

    @grpc_errors
    async def GetExperimentReport(
        self, request: pb.GetExperimentReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentReport:
        return convert.report_to_pb(await self._service.report(request.name))

    @grpc_stream_errors
    async def ExportRequestLog(
        self, request: pb.ExportRequestLogRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RequestLogRecord]:
        async for record, feedback in self._service.export(
            request.experiment, request.since_unix, request.until_unix
        ):
            yield convert.record_to_pb(record, feedback)
