"""FastAPI (or any Starlette app) integration: one shared HubClient per application.

FastAPI is not a dependency of hubasync (install the ``fastapi`` extra for the examples); this
module only relies on the ASGI lifespan protocol and on ``request.app.state``::

    from fastapi import Depends, FastAPI
    from hubasync import HubClient
    from hubasync.fastapi import get_hub, hub_lifespan

    app = FastAPI(lifespan=hub_lifespan())

    @app.post("/warm/{org}/{name}")
    async def warm(org: str, name: str, hub: HubClient = Depends(get_hub)) -> dict[str, str]:
        download = await hub.start_snapshot(f"{org}/{name}")
        return {"id": download.id}

The client is opened when the app starts and closed when it stops (downloads still in flight
are cancelled cleanly). :func:`sse_events` turns one download's events into Server-Sent Events.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import msgspec

from hubasync._client import HubClient
from hubasync._config import HubConfig
from hubasync._events import encode_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.requests import Request

    from hubasync._flight import Download
else:  # FastAPI reads get_hub's annotation at run time: give it Starlette's Request
    try:
        from starlette.requests import Request
    except ImportError:  # no Starlette installed: get_hub is not used either
        Request = Any

__all__ = ["download_status", "get_hub", "hub_lifespan", "sse_events"]

STATE_ATTR = "hub"


def hub_lifespan(
    config: HubConfig | Callable[[], HubConfig] | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that opens one HubClient for the app (``app.state.hub``) and closes it.

    ``config`` is a HubConfig, a factory, or None for ``HubConfig.from_env()`` (read when the
    app starts, not at import).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if isinstance(config, HubConfig):
            cfg = config
        else:
            factory = config if config is not None else HubConfig.from_env
            cfg = await anyio.to_thread.run_sync(factory)
        async with HubClient(cfg) as hub:
            setattr(app.state, STATE_ATTR, hub)
            try:
                yield
            finally:
                delattr(app.state, STATE_ATTR)

    return lifespan


def get_hub(request: Request) -> HubClient:
    """A dependency: the app's shared HubClient (``Depends(get_hub)``)."""
    hub = getattr(request.app.state, STATE_ATTR, None)
    if not isinstance(hub, HubClient):
        raise RuntimeError("no HubClient on app.state: create the app with lifespan=hub_lifespan()")
    return hub


def download_status(download: Download) -> dict[str, Any]:
    """A JSON-ready view of a download: state, bytes, files, path, error."""
    p = download.progress
    error = None
    if download.error is not None and download.state == "failed":
        error = {"type": type(download.error).__name__, "message": str(download.error)}
    return {
        "id": download.id,
        "state": download.state,
        "commit": p.commit,
        "bytes": {"done": p.bytes_done, "total": p.bytes_total},
        "files": {"done": p.files_done, "total": p.files_total,
                  "from_cache": p.files_from_cache, "failed": p.files_failed},
        "path": download.path,
        "error": error,
    }


def _sse(kind: str, data: bytes) -> str:
    return f"event: {kind}\ndata: {data.decode()}\n\n"


async def sse_events(hub: HubClient, download: Download) -> AsyncIterator[str]:
    """Server-Sent Events for one download: a ``status`` first, then every bus event of its
    run (``plan_ready``, ``bytes_received``, ``file_done``, ...), and a final ``status``."""
    async with hub.bus.subscribe(run_id=download.run_id) as events:
        yield _sse("status", msgspec.json.encode(download_status(download)))
        if not download.done:
            async with anyio.create_task_group() as tg:

                async def close_when_done() -> None:
                    with contextlib.suppress(Exception):  # its outcome is in the final status
                        await download.wait()
                    events.close()

                tg.start_soon(close_when_done)
                async for event in events:
                    yield _sse(str(type(event).__struct_config__.tag), encode_event(event))
                tg.cancel_scope.cancel()
        yield _sse("status", msgspec.json.encode(download_status(download)))
