"""FakeHub: two real aiohttp servers on loopback, a Hub host and a CDN host.

    async with FakeHub(repos=[repo]) as hub:          # in the running event loop
        ...hub.endpoint, hub.cdn_endpoint, hub.requests
    with FakeHub(repos=[repo]).run_in_thread() as hub:  # its own loop in a daemon thread
        ...

Every request goes through `_serve`: it is recorded, answered by the Hub or CDN logic as a
`Reply`, then the first matching fault (if any) is applied while sending it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

from aiohttp import web

from hubasync.testing._cdn import cdn_reply, sha_of
from hubasync.testing._faults import Fault, FaultBook, ServerName
from hubasync.testing._hub_app import HubHandler
from hubasync.testing._wire import (
    RecordedRequest,
    Reply,
    RequestLog,
    apply_header_fault,
    error_reply,
    send,
    target_of,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator
    from types import TracebackType

    from hubasync._types import RepoType
    from hubasync.testing._repo import FakeFile, FakeRepo

__all__ = ["FakeHub"]

_log = logging.getLogger("hubasync.testing")
DEFAULT_TOKEN = "hf_valid_token"  # noqa: S105
_SHUTDOWN_TIMEOUT = 5.0


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _index_all(repos: list[FakeRepo]) -> None:
    for repo in repos:
        repo.index_blobs()


class FakeHub:
    """A fake huggingface.co (Hub + CDN) for tests and benchmarks. See the module docstring."""

    def __init__(
        self,
        repos: Iterable[FakeRepo] = (),
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        page_size: int = 50,
        cdn_host: str = "127.0.0.2",
        url_ttl: float = 3600.0,
        gzip: bool = False,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
    ) -> None:
        self.tokens: set[str] = set(tokens)
        self.page_size = page_size
        self.url_ttl = url_ttl
        self.gzip = gzip
        #: The clock for URL expiry (epoch seconds); replace it to time-travel.
        self.now: Callable[[], float] = time.time
        #: The key signing CDN URLs.
        self.secret = secrets.token_bytes(32)
        self._host, self._port, self._cdn_host, self._cdn_port = host, port, cdn_host, cdn_port
        self._repos: dict[tuple[str, str], FakeRepo] = {}
        self._renames: dict[tuple[str, str], str] = {}
        self._faults = FaultBook(seed)
        self._log = RequestLog()
        self._runners: list[web.AppRunner] = []
        self._endpoints: dict[ServerName, str] = {}
        self._closing: asyncio.Event | None = None
        self._hub_handler = HubHandler(self)
        for repo in repos:
            self.add_repo(repo)

    def __repr__(self) -> str:
        where = self._endpoints.get("hub", "not started")
        return f"<FakeHub {where} [repos: {len(self._repos)}, requests: {len(self.requests)}]>"

    # -- public state -----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The Hub host, `http://127.0.0.1:PORT` (once started; kept after it stops)."""
        return self._endpoint("hub")

    @property
    def cdn_endpoint(self) -> str:
        """The CDN host, `http://127.0.0.2:PORT` (or 127.0.0.1 when .2 cannot be bound)."""
        return self._endpoint("cdn")

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to either server so far, in arrival order (a copy)."""
        return self._log.snapshot()

    def clear_requests(self) -> None:
        self._log.clear()

    @property
    def repos(self) -> dict[str, FakeRepo]:
        """The repos served, by repo id (a copy; `repo(id, type)` tells same-named ones apart)."""
        return {repo_id: repo for (_, repo_id), repo in self._repos.items()}

    def add_repo(self, repo: FakeRepo) -> None:
        self._repos[(repo.repo_type, repo.repo_id)] = repo

    def repo(self, repo_id: str, repo_type: RepoType = "model") -> FakeRepo:
        """The repo served under that name (KeyError if none)."""
        return self._repos[(repo_type, repo_id)]

    def rename_repo(self, old_id: str, new_id: str, *, repo_type: RepoType | None = None) -> None:
        """Serve the repo under `new_id`; `old_id` then answers a relative 307 to the new path."""
        types = [repo_type] if repo_type else [t for t, i in self._repos if i == old_id]
        if len(types) != 1 or (types[0], old_id) not in self._repos:
            raise KeyError(f"no single repo named {old_id!r} to rename")
        repo = self._repos.pop((types[0], old_id))
        repo.repo_id = new_id
        self._repos[(types[0], new_id)] = repo
        for key, target in list(self._renames.items()):
            if key[0] == types[0] and target == old_id:
                self._renames[key] = new_id
        self._renames[(types[0], old_id)] = new_id
        self._renames.pop((types[0], new_id), None)

    def add_fault(self, fault: Fault) -> None:
        """Arm `fault` (after the ones already armed: the first that applies wins)."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def fault_hits(self, fault: Fault) -> int:
        """How many times `fault` has fired so far."""
        return self._faults.hits(fault)

    def lookup(self, repo_type: RepoType, repo_id: str) -> FakeRepo | None:
        return self._repos.get((repo_type, repo_id))

    def renamed(self, repo_type: RepoType, repo_id: str) -> str | None:
        """The current name of a repo renamed away from `repo_id`, if any."""
        return self._renames.get((repo_type, repo_id))

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.stop()

    async def start(self) -> None:
        """Start both servers in the running loop."""
        if self._runners:
            raise RuntimeError("FakeHub is already running")
        self._endpoints.clear()
        self._closing = asyncio.Event()
        try:
            hub_sock = _listen(self._host, self._port)
            await self._start_site("hub", hub_sock, self._serve_hub)
            try:
                cdn_sock = _listen(self._cdn_host, self._cdn_port)
            except OSError:
                cdn_sock = _listen(self._host, 0)
            await self._start_site("cdn", cdn_sock, self._serve_cdn)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop both servers: stalled responses end, open connections close."""
        if self._closing is not None:
            self._closing.set()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[Self]:
        """Run the hub in its own event loop in a daemon thread, for synchronous code."""
        ready = threading.Event()
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=self._thread_main, args=(ready, box), name="FakeHub", daemon=True
        )
        thread.start()
        ready.wait()
        if "error" in box:
            thread.join()
            raise box["error"]
        try:
            yield self
        finally:
            box["loop"].call_soon_threadsafe(box["stop"].set)
            thread.join(timeout=30)

    def _thread_main(self, ready: threading.Event, box: dict[str, Any]) -> None:
        async def main() -> None:
            box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
            async with self:
                ready.set()
                await box["stop"].wait()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the caller of run_in_thread
            box["error"] = exc
        finally:
            ready.set()

    def _endpoint(self, server: ServerName) -> str:
        try:
            return self._endpoints[server]
        except KeyError:
            raise RuntimeError("FakeHub was never started (use `async with hub`)") from None

    async def _start_site(
        self, server: ServerName, sock: socket.socket,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> None:  # fmt: skip
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        self._endpoints[server] = f"http://{host}:{port}"

    # -- serving ----------------------------------------------------------------------------

    async def _serve_hub(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "hub", self._hub_handler.reply)

    async def _serve_cdn(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "cdn", self._cdn_reply)

    async def _cdn_reply(self, request: web.Request) -> Reply:
        sha256 = sha_of(request.raw_path)
        blob = await self._find_blob(sha256)
        return cdn_reply(request, self.secret, self.now(), blob, sha256)

    async def _find_blob(self, sha256: str) -> FakeFile | None:
        repos = list(self._repos.values())
        for repo in repos:
            if (blob := repo.blob(sha256)) is not None:
                return blob
        await asyncio.to_thread(_index_all, repos)
        return next((b for r in repos if (b := r.blob(sha256)) is not None), None)

    async def _serve(
        self, request: web.Request, server: ServerName,
        answer: Callable[[web.Request], Awaitable[Reply]],
    ) -> web.StreamResponse:  # fmt: skip
        record = self._log.arrive(request, server)
        try:
            reply = await answer(request)
        except Exception as exc:
            _log.exception("FakeHub failed on %s %s", request.method, request.raw_path)
            reply = error_reply(500, f"FakeHub internal error: {exc!r}")
        path = unquote(request.raw_path.partition("?")[0])
        fault = self._faults.pick(target_of(request, server, path, reply))
        reply = apply_header_fault(reply, fault)
        reply.headers["X-Request-Id"] = record.request_id
        self._log.complete(record, reply.status, fault.kind if fault else None)
        assert self._closing is not None
        return await send(request, reply, fault, self._closing)
