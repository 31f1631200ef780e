"""Python clients for a hybrid-assistant server: :class:`AssistantClient` (sync) and
:class:`AsyncAssistantClient` (asyncio). They need only grpcio and protobuf.

    from hybrid_assistant.client import AssistantClient

    with AssistantClient("localhost:50051") as client:
        print(client.generate("Name three colours.", adapter="json-style").text)
        for part in client.stream("Tell me a story."):
            print(part.delta, end="", flush=True)

TLS: ``tls=True`` trusts the system roots; ``root_certificates`` (PEM bytes, implies TLS) trusts
a private CA or a self-signed server certificate instead. For mutual TLS add ``private_key`` and
``certificate_chain``. ``tls_server_name`` checks the server certificate against that name instead
of the target's host (for a target given by IP address, or through a tunnel).

    ca = Path("ca.pem").read_bytes()
    with AssistantClient("assistant.internal:50051", root_certificates=ca) as client: ...

:func:`tls_options` reads those PEM files from paths into the keyword arguments above:

    with AssistantClient(target, **tls_options(ca="ca.pem")) as client: ...

Errors surface as ``grpc.RpcError`` with the server's status code and message.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybrid_assistant.requests import (
    ExperimentState,
    Messages,
    create_experiment_request,
    documents,
    export_request,
    feedback_request,
    generate_request,
    retrieve_request,
    score_request,
    update_experiment_request,
)
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc

__all__ = ["AssistantClient", "AsyncAssistantClient", "TlsOptionError", "pb", "tls_options"]

_TLS_FILE_NAMES = {"ca": "ca", "client_cert": "client_cert", "client_key": "client_key"}


class TlsOptionError(ValueError):
    """A TLS file that cannot be read, or a client certificate without its key (or the reverse)."""


def tls_options(
    *,
    tls: bool = False,
    ca: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The TLS keyword arguments of :class:`AssistantClient`/:class:`AsyncAssistantClient`, with the
    PEM files read from paths: ``ca`` (trusted instead of the system roots; implies TLS),
    ``client_cert``/``client_key`` (mutual TLS, both or neither).

    Raises :class:`TlsOptionError`, whose message spells each file as ``names`` says (e.g.
    ``{"ca": "--tls-ca"}`` for a command line; by default the parameter names).
    """
    label = {**_TLS_FILE_NAMES, **(names or {})}
    if (client_cert is None) != (client_key is None):
        raise TlsOptionError(f"{label['client_cert']} and {label['client_key']} must be given together")
    return {
        "tls": tls,
        "root_certificates": _read_pem(label["ca"], ca),
        "certificate_chain": _read_pem(label["client_cert"], client_cert),
        "private_key": _read_pem(label["client_key"], client_key),
        "tls_server_name": server_name,
    }


def _read_pem(label: str, path: str | os.PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsOptionError(f"{label} {os.fspath(path)!r}: {exc.strerror or exc}") from None


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _channel_args(
    tls: bool,
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
    tls_server_name: str | None,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """Credentials (None: plaintext) and channel options; any TLS material implies TLS."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("private_key and certificate_chain (mutual TLS) must be given together")
    if not (tls or root_certificates or certificate_chain or tls_server_name):
        return None, []
    creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    options = [("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []
    return creds, options


def _rpc_error_text(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name}: {details}" if code is not None else str(details)


def _not_ready(timeout: float, last: str) -> str:
    """Why :meth:`wait_ready` gave up: a TLS mismatch shows here as the last UNAVAILABLE's details."""
    return f"server not SERVING after {timeout} s" + (f" (last: {last})" if last else "")


class _Stubs:
    """The service stubs on ``self.channel`` and per-call options, shared by both clients."""

    channel: Any

    def _bind(self, token: str | None, timeout: float | None) -> None:
        self._md = _metadata(token)
        self.timeout = timeout
        self.assistant = pb_grpc.AssistantStub(self.channel)
        self.adapters = pb_grpc.AdaptersStub(self.channel)
        self.knowledge = pb_grpc.KnowledgeStub(self.channel)
        self.experiments = pb_grpc.ExperimentsStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def _kw(self, timeout: float | None) -> dict[str, Any]:
        return {"metadata": self._md, "timeout": timeout if timeout is not None else self.timeout}


class AssistantClient(_Stubs):
    """Blocking client. ``token`` is sent as a bearer token (needed for admin calls when set);
    TLS arguments as in the module docstring."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        tls_server_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        creds, options = _channel_args(
            tls, root_certificates, private_key, certificate_chain, tls_server_name
        )
        self.channel = grpc.secure_channel(target, creds, options) if creds else grpc.insecure_channel(target)
        self._bind(token, timeout)

    def __enter__(self) -> AssistantClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 120.0, service: str = "") -> None:
        """Poll the health service until SERVING; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = _rpc_error_text(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(_not_ready(timeout, last))
            time.sleep(0.2)

    # answering
    def generate(
        self, messages: Messages, *, timeout: float | None = None, **options: Any
    ) -> pb.GenerateResponse:
        """Options: adapter, system, max_tokens, temperature, top_p, seed, stop, min_tokens,
        ignore_eos, retrieval, top_k, mode, passages, experiment, subject_key, request_id."""
        return self.assistant.Generate(generate_request(messages, **options), **self._kw(timeout))

    def stream(
        self, messages: Messages, *, timeout: float | None = None, **options: Any
    ) -> Iterator[pb.GenerateStreamResponse]:
        """Text deltas; the last item's ``summary`` holds the totals. Closing the iterator cancels."""
        return iter(self.assistant.GenerateStream(generate_request(messages, **options), **self._kw(timeout)))

    def score(
        self,
        messages: Messages,
        continuations: Sequence[str],
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> pb.ScoreResponse:
        return self.assistant.Score(score_request(messages, continuations, **options), **self._kw(timeout))

    def server_info(self, *, timeout: float | None = None) -> pb.ServerInfo:
        return self.assistant.GetServerInfo(pb.GetServerInfoRequest(), **self._kw(timeout))

    # adapters
    def list_adapters(self, *, timeout: float | None = None) -> list[pb.AdapterInfo]:
        return list(self.adapters.ListAdapters(pb.ListAdaptersRequest(), **self._kw(timeout)).adapters)

    def load_adapter(
        self, name: str, path: str, *, replace: bool = False, pin: bool = False, timeout: float | None = None
    ) -> pb.LoadAdapterResponse:
        request = pb.LoadAdapterRequest(name=name, path=path, replace=replace, pin=pin)
        return self.adapters.LoadAdapter(request, **self._kw(timeout))

    def unload_adapter(self, name: str, *, timeout: float | None = None) -> pb.UnloadAdapterResponse:
        return self.adapters.UnloadAdapter(pb.UnloadAdapterRequest(name=name), **self._kw(timeout))

    # knowledge
    def ingest(
        self, docs: Iterable[pb.Document | Mapping[str, object]], *, timeout: float | None = None
    ) -> pb.IngestResponse:
        return self.knowledge.Ingest(documents(docs), **self._kw(timeout))

    def delete_documents(
        self, ids: Sequence[str], *, timeout: float | None = None
    ) -> pb.DeleteDocumentsResponse:
        return self.knowledge.DeleteDocuments(pb.DeleteDocumentsRequest(ids=list(ids)), **self._kw(timeout))

    def index_stats(self, *, timeout: float | None = None) -> pb.IndexStatsResponse:
        return self.knowledge.IndexStats(pb.IndexStatsRequest(), **self._kw(timeout))

    def retrieve(self, query: str, *, timeout: float | None = None, **options: Any) -> pb.RetrieveResponse:
        """Options: top_k, mode ("dense" | "lexical" | "hybrid"), min_score, metadata_filter."""
        return self.knowledge.Retrieve(retrieve_request(query, **options), **self._kw(timeout))

    # experiments
    def create_experiment(
        self,
        name: str,
        arms: Iterable[pb.ExperimentArm | Mapping[str, Any]],
        *,
        description: str = "",
        timeout: float | None = None,
    ) -> pb.Experiment:
        """Admin. Arms: ``requests.experiment_arm(...)`` or dicts of its arguments (name, adapter,
        retrieval, top_k, mode, weight, control); exactly one is the control."""
        request = create_experiment_request(name, arms, description=description)
        return self.experiments.CreateExperiment(request, **self._kw(timeout))

    def update_experiment(
        self,
        name: str,
        *,
        state: ExperimentState | None = None,
        weights: Mapping[str, float] | None = None,
        timeout: float | None = None,
    ) -> pb.Experiment:
        """Admin. ``state``: "running" | "paused" | "stopped"; ``weights``: new weights of some arms."""
        request = update_experiment_request(name, state=state, weights=weights)
        return self.experiments.UpdateExperiment(request, **self._kw(timeout))

    def list_experiments(self, *, timeout: float | None = None) -> list[pb.Experiment]:
        reply = self.experiments.ListExperiments(pb.ListExperimentsRequest(), **self._kw(timeout))
        return list(reply.experiments)

    def record_feedback(
        self, request_id: str, metric: str, value: float | bool, *, timeout: float | None = None
    ) -> pb.RecordFeedbackResponse:
        """Durable once this returns; the same value again is a no-op (``duplicate``)."""
        request = feedback_request(request_id, metric, value)
        return self.experiments.RecordFeedback(request, **self._kw(timeout))

    def experiment_report(self, name: str, *, timeout: float | None = None) -> pb.ExperimentReport:
        request = pb.GetExperimentReportRequest(name=name)
        return self.experiments.GetExperimentReport(request, **self._kw(timeout))

    def export_request_log(
        self, experiment: str = "", *, since: float = 0.0, until: float = 0.0, timeout: float | None = None
    ) -> Iterator[pb.RequestLogRecord]:
        """Admin. Logged requests with their feedback, oldest first."""
        request = export_request(experiment, since=since, until=until)
        return iter(self.experiments.ExportRequestLog(request, **self._kw(timeout)))


class AsyncAssistantClient(_Stubs):
    """asyncio client with the same methods as :class:`AssistantClient`, awaitable."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        tls_server_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        creds, options = _channel_args(
            tls, root_certificates, private_key, certificate_chain, tls_server_name
        )
        self.channel = (
            grpc.aio.secure_channel(target, creds, options) if creds else grpc.aio.insecure_channel(target)
        )
        self._bind(token, timeout)

    async def __aenter__(self) -> AsyncAssistantClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close(None)

    async def wait_ready(self, timeout: float = 120.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = _rpc_error_text(exc)
            if time.monotonic() > deadline:
                raise TimeoutError(_not_ready(timeout, last))
            await asyncio.sleep(0.2)

    async def generate(
        self, messages: Messages, *, timeout: float | None = None, **options: Any
    ) -> pb.GenerateResponse:
        return await self.assistant.Generate(generate_request(messages, **options), **self._kw(timeout))

    async def stream(
        self, messages: Messages, *, timeout: float | None = None, **options: Any
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        call = self.assistant.GenerateStream(generate_request(messages, **options), **self._kw(timeout))
        try:
            async for item in call:
                yield item
        finally:
            call.cancel()  # a consumer that stops early frees the server's batch slot

    async def score(
        self,
        messages: Messages,
        continuations: Sequence[str],
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> pb.ScoreResponse:
        return await self.assistant.Score(
            score_request(messages, continuations, **options), **self._kw(timeout)
        )

    async def server_info(self, *, timeout: float | None = None) -> pb.ServerInfo:
        return await self.assistant.GetServerInfo(pb.GetServerInfoRequest(), **self._kw(timeout))

    async def list_adapters(self, *, timeout: float | None = None) -> list[pb.AdapterInfo]:
        reply = await self.adapters.ListAdapters(pb.ListAdaptersRequest(), **self._kw(timeout))
        return list(reply.adapters)

    async def load_adapter(
        self, name: str, path: str, *, replace: bool = False, pin: bool = False, timeout: float | None = None
    ) -> pb.LoadAdapterResponse:
        request = pb.LoadAdapterRequest(name=name, path=path, replace=replace, pin=pin)
        return await self.adapters.LoadAdapter(request, **self._kw(timeout))

    async def unload_adapter(self, name: str, *, timeout: float | None = None) -> pb.UnloadAdapterResponse:
        return await self.adapters.UnloadAdapter(pb.UnloadAdapterRequest(name=name), **self._kw(timeout))

    async def ingest(
        self, docs: Iterable[pb.Document | Mapping[str, object]], *, timeout: float | None = None
    ) -> pb.IngestResponse:
        return await self.knowledge.Ingest(iter(documents(docs)), **self._kw(timeout))

    async def delete_documents(
        self, ids: Sequence[str], *, timeout: float | None = None
    ) -> pb.DeleteDocumentsResponse:
        request = pb.DeleteDocumentsRequest(ids=list(ids))
        return await self.knowledge.DeleteDocuments(request, **self._kw(timeout))

    async def index_stats(self, *, timeout: float | None = None) -> pb.IndexStatsResponse:
        return await self.knowledge.IndexStats(pb.IndexStatsRequest(), **self._kw(timeout))

    async def retrieve(
        self, query: str, *, timeout: float | None = None, **options: Any
    ) -> pb.RetrieveResponse:
        return await self.knowledge.Retrieve(retrieve_request(query, **options), **self._kw(timeout))

    async def create_experiment(
        self,
        name: str,
        arms: Iterable[pb.ExperimentArm | Mapping[str, Any]],
        *,
        description: str = "",
        timeout: float | None = None,
    ) -> pb.Experiment:
        request = create_experiment_request(name, arms, description=description)
        return await self.experiments.CreateExperiment(request, **self._kw(timeout))

    async def update_experiment(
        self,
        name: str,
        *,
        state: ExperimentState | None = None,
        weights: Mapping[str, float] | None = None,
        timeout: float | None = None,
    ) -> pb.Experiment:
        request = update_experiment_request(name, state=state, weights=weights)
        return await self.experiments.UpdateExperiment(request, **self._kw(timeout))

    async def list_experiments(self, *, timeout: float | None = None) -> list[pb.Experiment]:
        reply = await self.experiments.ListExperiments(pb.ListExperimentsRequest(), **self._kw(timeout))
        return list(reply.experiments)

    async def record_feedback(
        self, request_id: str, metric: str, value: float | bool, *, timeout: float | None = None
    ) -> pb.RecordFeedbackResponse:
        request = feedback_request(request_id, metric, value)
        return await self.experiments.RecordFeedback(request, **self._kw(timeout))

    async def experiment_report(self, name: str, *, timeout: float | None = None) -> pb.ExperimentReport:
        request = pb.GetExperimentReportRequest(name=name)
        return await self.experiments.GetExperimentReport(request, **self._kw(timeout))

    async def export_request_log(
        self, experiment: str = "", *, since: float = 0.0, until: float = 0.0, timeout: float | None = None
    ) -> AsyncIterator[pb.RequestLogRecord]:
        request = export_request(experiment, since=since, until=until)
        async for record in self.experiments.ExportRequestLog(request, **self._kw(timeout)):
            yield record
