"""A download service: start snapshots, watch them live over SSE, cancel them.

    HF_ENDPOINT=... uvicorn examples.fastapi_app:app

    POST   /downloads              {"repo_id", "repo_type", "revision", "allow_patterns"} -> id
    GET    /downloads/{id}         state, bytes, files, path, error
    GET    /downloads/{id}/events  Server-Sent Events of that download (status, plan, progress)
    DELETE /downloads/{id}         cancel
    GET    /health

One HubClient is shared by every request (opened and closed by the app's lifespan). The same
request posted while it runs returns the same id: ten concurrent POSTs make one download.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

import hubasync
from hubasync.fastapi import download_status, get_hub, hub_lifespan, sse_events

app = FastAPI(title="hubasync download service", lifespan=hub_lifespan())
Hub = Annotated[hubasync.HubClient, Depends(get_hub)]


class DownloadRequest(BaseModel):
    repo_id: str
    repo_type: Literal["model", "dataset", "space"] = "model"
    revision: str | None = None
    allow_patterns: list[str] | None = None


@app.exception_handler(hubasync.UsageError)
async def usage_error(request: Request, exc: hubasync.UsageError) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=400)


def _download(hub: hubasync.HubClient, download_id: str) -> hubasync.Download:
    download = hub.get_download(download_id)
    if download is None:
        raise HTTPException(status_code=404, detail=f"no download {download_id}")
    return download


@app.post("/downloads", status_code=202)
async def create_download(body: DownloadRequest,
                          hub: Hub) -> dict[str, str]:
    download = await hub.start_snapshot(body.repo_id, repo_type=body.repo_type,
                                        revision=body.revision,
                                        allow_patterns=body.allow_patterns)
    return {"id": download.id}


@app.get("/downloads/{download_id}")
async def get_download(download_id: str,
                       hub: Hub) -> dict[str, Any]:
    return download_status(_download(hub, download_id))


@app.get("/downloads/{download_id}/events")
async def download_events(download_id: str,
                          hub: Hub) -> StreamingResponse:
    download = _download(hub, download_id)
    return StreamingResponse(sse_events(hub, download), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@app.delete("/downloads/{download_id}")
async def cancel_download(download_id: str,
                          hub: Hub) -> dict[str, Any]:
    download = _download(hub, download_id)
    download.cancel()
    return download_status(download)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
