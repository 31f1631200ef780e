"""Server lifecycle: build the gRPC server, warm up, serve, drain on SIGTERM, exit if the engine dies.

The gRPC server starts listening at once so health checks answer during warm-up (NOT_SERVING);
health turns SERVING only after the model is loaded, warmed up and adapters are preloaded.
The OpenAI-compatible HTTP API (``server.http``, unless ``http_listen`` is off) binds and starts
with it on the same event loop, answers ``/health`` 503 until then, and drains with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from importlib import metadata
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hybrid_assistant.retrieval.errors import RetrievalError
from hybrid_assistant.server import metrics, openmp
from hybrid_assistant.server.adapter_registry import AdapterRegistry
from hybrid_assistant.server.assistant import AssistantCore
from hybrid_assistant.server.auth import AdminTokenInterceptor
from hybrid_assistant.server.cpu import cpu_info
from hybrid_assistant.server.decode_guard import DecodeGuardInterceptor
from hybrid_assistant.server.engines.factory import make_engine
from hybrid_assistant.server.experiments.log_store import open_log_store
from hybrid_assistant.server.experiments.request_log import RequestLog
from hybrid_assistant.server.experiments.service import ExperimentManager
from hybrid_assistant.server.http.routes import Shared
from hybrid_assistant.server.http.server import HttpServer, create_app
from hybrid_assistant.server.knowledge import KnowledgeIndex
from hybrid_assistant.server.servicers.adapters import AdaptersServicer
from hybrid_assistant.server.servicers.assistant import AssistantServicer
from hybrid_assistant.server.servicers.experiments import ExperimentsServicer
from hybrid_assistant.server.servicers.knowledge import KnowledgeServicer
from hybrid_assistant.v1 import assistant_pb2 as pb
from hybrid_assistant.v1 import assistant_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings
    from hybrid_assistant.server.engines.types import Engine, PrefixCacheInfo

log = logging.getLogger(__name__)

SERVICES = pb.DESCRIPTOR.services_by_name
# Responses (request-log exports, long contexts) may be larger than what a request may send.
_MAX_SEND_MESSAGE = 64 * 1024 * 1024


class App:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings, on_death=self._engine_died_threadsafe)
        self.registry = AdapterRegistry(
            self.engine.adapter_backend,
            lambda: self.engine.base_model_spec,
            settings.resolved_adapter_roots,
            max_resident=settings.max_resident_adapters,
            max_rank=settings.max_lora_rank,
            slot_wait_s=settings.adapter_slot_wait_s,
        )
        self.knowledge = KnowledgeIndex(settings) if settings.knowledge else None
        # SQLite in data_dir, or the PostgreSQL of database_url shared with the other replicas.
        self.log_db = open_log_store(settings)
        self.request_log = (
            RequestLog(self.log_db, settings.request_log) if settings.request_log.enabled else None
        )
        self.experiments = ExperimentManager(settings, self.log_db, self.request_log)
        self.experiments.open()
        self.core = AssistantCore(
            settings,
            self.engine,
            self.registry,
            contexts=self.knowledge,
            resolve_arm=self.experiments.resolve_arm,
            on_outcome=self.experiments.on_outcome,
            claim_request_id=self.experiments.claim_request_id,
            release_request_id=self.experiments.release_request_id,
        )
        # The asyncio servicer's public name (grpcio-health-checking >= 1.63); grpc-stubs 1.53
        # predates it, hence the ignore (flagged as unused once the stubs catch up).
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.http: HttpServer | None = None  # the OpenAI-compatible API, unless http_listen is off
        self.http_port = 0
        self.exit_code = 0
        self.warm_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._warm_task: asyncio.Task[None] | None = None
        self._services: list[str] = []

    # ------------------------------------------------------------------ start

    async def start(self) -> int:
        """Listen (health NOT_SERVING) and begin warming up in the background; returns the port."""
        self._loop = asyncio.get_running_loop()
        interceptors: list[grpc.aio.ServerInterceptor] = [DecodeGuardInterceptor()]
        if self.settings.admin_token is not None:
            interceptors.append(AdminTokenInterceptor(self.settings.admin_token.get_secret_value()))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", self.settings.max_message_bytes),
                ("grpc.max_send_message_length", _MAX_SEND_MESSAGE),
                # gRPC sets SO_REUSEPORT by default: a second server on a busy port would start and
                # silently take a share of the new connections. Off, binding a busy port fails.
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_AssistantServicer_to_server(AssistantServicer(self.core, self.server_info), server)
        pb_grpc.add_AdaptersServicer_to_server(AdaptersServicer(self.registry), server)
        experiments = ExperimentsServicer(self.experiments, self.settings.retrieval.max_top_k)
        pb_grpc.add_ExperimentsServicer_to_server(experiments, server)
        self._services = [
            SERVICES["Assistant"].full_name,
            SERVICES["Adapters"].full_name,
            SERVICES["Experiments"].full_name,
        ]
        if self.knowledge is not None:
            servicer = KnowledgeServicer(self.knowledge, self.settings.retrieval.max_top_k)
            pb_grpc.add_KnowledgeServicer_to_server(servicer, server)
            self._services.append(SERVICES["Knowledge"].full_name)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self.port = self._bind(server)
        if self.settings.http_listen:
            shared = Shared(self.settings, self.core, self.registry, self.server_info)
            self.http = HttpServer(self.settings, create_app(shared))
            try:
                self.http_port = self.http.bind()
            except OSError as exc:
                await server.stop(None)
                raise ListenError(exc.errno, exc.strerror) from None
        if self.request_log is not None:
            self.request_log.start()
        self.experiments.start()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self.server = server
        if self.http is not None:
            await self.http.start()
        if self.settings.metrics_port:
            metrics.serve(self.settings.metrics_port)
        log.info("listening on %s (port %d); warming up", self.settings.listen, self.port)
        self._warm_task = asyncio.create_task(self._warm_up())
        return self.port

    def _bind(self, server: grpc.aio.Server) -> int:
        """Add the listening port (TLS, and mTLS with tls_client_ca); ListenError if it cannot be bound."""
        listen = self.settings.listen
        try:
            if self.settings.tls_cert is not None and self.settings.tls_key is not None:
                client_ca = self.settings.tls_client_ca
                credentials = grpc.ssl_server_credentials(
                    [(self.settings.tls_key.read_bytes(), self.settings.tls_cert.read_bytes())],
                    root_certificates=client_ca.read_bytes() if client_ca is not None else None,
                    require_client_auth=client_ca is not None,
                )
                port = server.add_secure_port(listen, credentials)
            else:
                port = server.add_insecure_port(listen)
        except RuntimeError:  # grpcio raises "Failed to bind to address ..." without the reason
            port = 0
        if port == 0:
            raise _bind_error(listen)
        return port

    async def _warm_up(self) -> None:
        try:
            if self.knowledge is not None:
                await self.knowledge.open()
            await self.engine.start()
            for preload in self.settings.preload_adapters:
                await self.registry.load(preload.name, preload.path, replace=True, pin=preload.pin)
        except Exception as exc:
            if isinstance(exc, RetrievalError):  # the operator's to fix (locked, incompatible, unreachable)
                log.error("warm-up failed: %s; the server will exit", exc)
            else:
                log.exception("warm-up failed; the server will exit")
            self.warm_error = exc
            self.exit_code = 1
            await self.stop(grace=0)
            return
        self.core.ready = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._ready.set()
        log.info("ready: %s on %s engine", self.engine.model_info.name, self.engine.name)

    async def wait_ready(self) -> None:
        """Wait until SERVING (wrap in ``asyncio.timeout``); raises if warm-up failed."""
        ready = asyncio.ensure_future(self._ready.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stopped.cancel()
        if self.warm_error is not None:
            raise RuntimeError(f"warm-up failed: {self.warm_error}") from self.warm_error
        if not self._ready.is_set():
            raise RuntimeError("the server stopped before it was ready")

    # ------------------------------------------------------------------ stop

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, let in-flight requests finish (up to ``grace`` s), then release everything."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_s if grace is None else grace
        self.core.ready = False
        await self.health.enter_graceful_shutdown()
        # Both transports drain together: in-flight requests (HTTP streams too) get the same grace.
        await asyncio.gather(
            *([self.server.stop(grace)] if self.server is not None else []),
            *([self.http.stop(grace)] if self.http is not None else []),
        )
        if self._warm_task is not None and not self._warm_task.done():
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._warm_task
        await self.engine.close()
        if self.knowledge is not None:
            await self.knowledge.close()
        await self.experiments.close()
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.close)  # writes what is still queued
        self.log_db.close()
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> int:
        await self._stopped.wait()
        return self.exit_code

    async def serve_forever(self) -> int:
        """Run until SIGTERM/SIGINT (graceful drain) or engine death; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
        # Executor threads (model load, embeddings, adapter reads) free their OpenMP threads after
        # each task, so the engine's scheduler keeps the only team (openmp.py says why).
        loop.set_default_executor(openmp.ReleasingExecutor(thread_name_prefix="asyncio"))
        await self.start()
        openmp.release_team()  # this thread's, if anything here ran parallel work
        return await self.wait_stopped()

    def _engine_died_threadsafe(self, exc: BaseException) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._engine_died(exc)))

    async def _engine_died(self, exc: BaseException) -> None:
        # Serving errors forever helps nobody: go NOT_SERVING and exit so the supervisor restarts us.
        log.critical("engine died (%s): stopping the server", exc)
        self.exit_code = 1
        await self.stop(grace=0)

    # ------------------------------------------------------------------ helpers

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self._services):
            await self.health.set(name, status)

    def server_info(self) -> pb.ServerInfo:
        model = self.engine.model_info
        sampling = self.core.sampling_defaults
        cpu = cpu_info()
        return pb.ServerInfo(
            version=_version(),
            engine=self.engine.name,
            model=model.name,
            model_fingerprint=model.fingerprint,
            max_context_tokens=model.max_context_tokens,
            default_max_tokens=self.settings.default_max_tokens,
            dtype=model.dtype,
            index_fingerprint=self.knowledge.fingerprint() if self.knowledge else "",
            embedder=self.knowledge.embedder_name() if self.knowledge else "",
            default_temperature=sampling.temperature,
            default_top_p=sampling.top_p,
            sampling_defaults_source=sampling.source,
            prefix_cache=_prefix_cache_message(self.engine.prefix_cache_info()),
            cpu=cpu.model,
            cpu_features=list(cpu.isa),
            cpu_torch_capability=cpu.torch_capability,
        )


def _prefix_cache_message(info: PrefixCacheInfo) -> pb.PrefixCacheInfo:
    return pb.PrefixCacheInfo(
        enabled=info.enabled,
        hit_tokens=info.hit_tokens,
        miss_tokens=info.miss_tokens,
        hit_rate=info.hit_rate,
        blocks=info.blocks,
        bytes=info.bytes,
        budget_bytes=info.budget_bytes,
        block_tokens=info.block_tokens,
        evicted_blocks=info.evicted_blocks,
    )


class ListenError(OSError):
    """The server could not bind its listen address (``strerror`` says why, in one line)."""


def _bind_error(listen: str) -> ListenError:
    """Say why ``listen`` could not be bound: gRPC only reports that it failed."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return ListenError(
                errno.EADDRINUSE,
                f"cannot listen on {listen!r}: the port is already in use (is another server running?)",
            )
        return ListenError(exc.errno, f"cannot listen on {listen!r}: {exc.strerror or exc}")
    return ListenError(errno.EADDRNOTAVAIL, f"cannot listen on {listen!r}: address not available")


def _version() -> str:
    try:
        return metadata.version("hybrid-assistant")
    except metadata.PackageNotFoundError:
        return "0+unknown"
