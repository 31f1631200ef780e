"""Which adapters the server knows, which are in memory, and who is using them.

Shared by both engines; an engine only supplies an :class:`AdapterBackend` that puts weights
in and takes them out. Semantics (documented in the README):

* Load validates first (path inside an adapter root, PEFT LoRA, safetensors, base model,
  rank, target modules) and touches nothing if any check fails.
* An existing name is ``ALREADY_EXISTS`` unless ``replace``; a replace swaps the name to the
  new weights for new requests while in-flight requests finish on the old ones.
* Unload while requests use the adapter is *deferred*: the name disappears at once (new
  requests get ``NOT_FOUND``), the weights are freed when the last request finishes.
* At most ``max_resident`` adapters are in memory. Loading past it evicts the least recently
  used unpinned adapter with no request in flight; an evicted adapter stays registered and is
  reloaded from disk by the next request that names it. When every resident adapter is in
  flight, the load waits up to ``slot_wait_s`` for one to go idle (requests take a moment, so a
  burst over more adapters than slots queues briefly instead of failing); if all are pinned, or
  the wait runs out, it is RESOURCE_EXHAUSTED.

Everything runs on the event loop; a per-name lock serialises load, unload and reload. Every
install and uninstall goes through the registry, which keeps ``metrics.ADAPTERS_RESIDENT`` equal
to the number of adapter versions in memory (retired versions still in use included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hybrid_assistant.adapters.paths import check_adapter_name, resolve_adapter_dir
from hybrid_assistant.adapters.peft_format import AdapterSpec, BaseModelSpec, inspect_adapter
from hybrid_assistant.server import metrics
from hybrid_assistant.server.errors import AlreadyExists, NotFound, ResourceExhausted

log = logging.getLogger(__name__)


class AdapterBackend(Protocol):
    async def install(self, uid: int, name: str, spec: AdapterSpec) -> None:
        """Make adapter ``uid`` usable by requests (weights into the engine)."""

    async def uninstall(self, uid: int) -> None:
        """Free adapter ``uid``'s weights; no request uses it any more."""


@dataclass(eq=False)
class _Version:
    uid: int
    spec: AdapterSpec
    load_ms: float
    in_flight: int = 0
    retired: bool = False


@dataclass(eq=False)
class _Entry:
    name: str
    spec: AdapterSpec
    pinned: bool
    current: _Version | None = None  # None: registered but evicted
    last_used: float = field(default_factory=time.time)


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: str
    resident: bool
    pinned: bool
    rank: int
    target_modules: tuple[str, ...]
    base_model: str
    in_flight: int
    last_used_unix: float
    load_ms: float
    fingerprint: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class AdapterLease:
    """An adapter version a request holds; uid 0 is the base model."""

    uid: int
    name: str


BASE = AdapterLease(uid=0, name="")


class AdapterRegistry:
    def __init__(
        self,
        backend: AdapterBackend,
        base: Callable[[], BaseModelSpec],
        roots: Sequence[Path],
        *,
        max_resident: int,
        max_rank: int,
        slot_wait_s: float = 5.0,
    ) -> None:
        self._backend = backend
        self._base = base
        self._roots = list(roots)
        self._max_resident = max_resident
        self._max_rank = max_rank
        self._slot_wait_s = slot_wait_s
        self._idle = asyncio.Condition()  # notified when a resident version's last request ends
        self._entries: dict[str, _Entry] = {}
        self._retired: list[_Version] = []  # replaced or unloaded, still in use
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_uid = 1
        # uids whose weights the backend holds: what the ADAPTERS_RESIDENT gauge counts. Only the
        # registry sees every install and uninstall (loads, preloads, evictions, reloads on use,
        # deferred unloads), so it alone sets the gauge.
        self._in_memory: set[int] = set()

    # ------------------------------------------------------------------ admin

    async def load(self, name: str, path: str, *, replace: bool = False, pin: bool = False) -> AdapterInfo:
        check_adapter_name(name)
        async with self._lock(name):
            existing = self._entries.get(name)
            if existing is not None and not replace:
                raise AlreadyExists(
                    f"adapter {name!r} is already loaded from {str(existing.spec.path)!r}; "
                    "set replace to swap it"
                )
            directory = resolve_adapter_dir(path, self._roots)
            spec = await asyncio.to_thread(inspect_adapter, directory, self._base(), self._max_rank)
            if existing is not None:
                # Free the old weights first when nobody uses them, so a replace never needs
                # a spare resident slot; otherwise they stay until their last request ends.
                # The name lets go of the old version *before* the await: a request arriving
                # while the weights are removed must not take the uid being removed (it waits
                # on this name's lock in use() and gets the new version).
                old, existing.current = existing.current, None
                await self._retire(old)
            version = await self._install(name, spec)
            if existing is not None:
                existing.spec, existing.current, existing.pinned = spec, version, pin
                entry = existing
            else:
                entry = _Entry(name=name, spec=spec, pinned=pin, current=version)
                self._entries[name] = entry
            entry.last_used = time.time()
            log.info("adapter %s loaded from %s in %.1f ms", name, directory, version.load_ms)
            return self._info(entry)

    async def unload(self, name: str) -> tuple[bool, int]:
        """Forget ``name``; returns (deferred, in_flight)."""
        async with self._lock(name):
            entry = self._entries.pop(name, None)
            if entry is None:
                raise NotFound(f"adapter {name!r} is not loaded; loaded: {sorted(self._entries)}")
            version = entry.current
            if version is None or version.in_flight == 0:
                if version is not None:
                    await self._uninstall(version.uid)
                return False, 0
            await self._retire(version)
            return True, version.in_flight

    def infos(self) -> list[AdapterInfo]:
        return [self._info(e) for e in sorted(self._entries.values(), key=lambda e: e.name)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    # ------------------------------------------------------------------ requests

    @asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[AdapterLease]:
        """Hold adapter ``name`` (``""`` = base) for the duration of a request."""
        if not name:
            yield BASE
            return
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"adapter {name!r} is not loaded; loaded adapters: {self.names()}")
        if entry.current is None:  # evicted earlier: bring it back
            async with self._lock(name):
                if entry.current is None and self._entries.get(name) is entry:
                    entry.current = await self._install(name, entry.spec)
            if self._entries.get(name) is not entry or entry.current is None:
                raise NotFound(f"adapter {name!r} was unloaded")
        version = entry.current
        version.in_flight += 1
        entry.last_used = time.time()
        try:
            yield AdapterLease(uid=version.uid, name=name)
        finally:
            version.in_flight -= 1
            if version.in_flight == 0:
                if version.retired:
                    self._retired.remove(version)
                    await self._uninstall(version.uid)
                async with self._idle:
                    self._idle.notify_all()

    # ------------------------------------------------------------------ internals

    async def _uninstall(self, uid: int) -> None:
        await self._backend.uninstall(uid)
        self._in_memory.discard(uid)
        metrics.ADAPTERS_RESIDENT.set(len(self._in_memory))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _resident(self) -> int:
        return sum(1 for e in self._entries.values() if e.current is not None) + len(self._retired)

    async def _install(self, name: str, spec: AdapterSpec) -> _Version:
        await self._make_room()
        uid = self._next_uid
        self._next_uid += 1
        started = time.perf_counter()
        await self._backend.install(uid, name, spec)
        self._in_memory.add(uid)
        metrics.ADAPTERS_RESIDENT.set(len(self._in_memory))
        return _Version(uid=uid, spec=spec, load_ms=(time.perf_counter() - started) * 1000)

    async def _make_room(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._slot_wait_s
        while self._resident() >= self._max_resident:
            unpinned = [e for e in self._entries.values() if e.current is not None and not e.pinned]
            candidates = [e for e in unpinned if e.current is not None and e.current.in_flight == 0]
            if not candidates:
                remaining = deadline - loop.time()
                if remaining > 0 and (unpinned or self._retired):  # something will go idle
                    async with self._idle:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._idle.wait(), remaining)
                    continue
                raise ResourceExhausted(
                    f"all {self._resident()} resident adapters are pinned or in use "
                    f"(max_resident_adapters={self._max_resident}, waited up to {self._slot_wait_s:g} s)"
                )
            victim = min(candidates, key=lambda e: e.last_used)
            assert victim.current is not None
            uid, victim.current = victim.current.uid, None
            log.info("evicting least recently used adapter %s", victim.name)
            await self._uninstall(uid)

    async def _retire(self, version: _Version | None) -> None:
        if version is None:
            return
        if version.in_flight == 0:
            await self._uninstall(version.uid)
        else:
            version.retired = True
            self._retired.append(version)

    def _info(self, entry: _Entry) -> AdapterInfo:
        version = entry.current
        spec = entry.spec
        return AdapterInfo(
            name=entry.name,
            path=str(spec.path),
            resident=version is not None,
            pinned=entry.pinned,
            rank=spec.rank,
            target_modules=spec.target_modules,
            base_model=spec.base_model,
            in_flight=version.in_flight if version else 0,
            last_used_unix=entry.last_used,
            load_ms=version.load_ms if version else 0.0,
            fingerprint=spec.fingerprint,
            metadata={str(k): str(v) for k, v in spec.metadata.items()},
        )
