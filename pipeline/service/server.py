"""Run the service under uvicorn: one process, or several worker processes sharing the socket.

With ``workers > 1`` uvicorn's supervisor starts that many processes, each with its own JVM, its
own copy of the indexes' searchers and of the model (the operating system shares the index files'
pages between them). A worker process imports ``worker_app``, which reads what to serve from the
environment variable ``SPLADE_PIPELINE_SERVE`` that the parent set: uvicorn can hand a worker only
an import string, not an application object.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from pipeline.service.app import create_app
from pipeline.service.backend import check_indexes
from pipeline.service.guard import Limits

SETTINGS_VARIABLE = "SPLADE_PIPELINE_SERVE"
PROTOCOL = "pipeline.service.guard:GuardedH11Protocol"


def uvicorn_options(limits: Limits, verbose: bool = False) -> dict:
    """What every uvicorn process gets: the guarded protocol, connection and time limits, quiet logs."""
    return {"http": PROTOCOL, "lifespan": "on", "limit_concurrency": limits.max_connections,
            "timeout_keep_alive": limits.keep_alive_s, "timeout_graceful_shutdown": 5,
            "h11_max_incomplete_event_size": limits.max_head_bytes,
            "timeout_worker_healthcheck": 120,  # a worker answers pings only once torch has imported
            "access_log": verbose, "log_level": "info" if verbose else "warning", "server_header": False}


def serve(indexes: dict[str, Path], host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
          threads: int | None = None, limits: Limits = Limits(), verbose: bool = False,
          query_encoder: str | None = None, force: bool = False, two_step: bool = False) -> None:
    """Serve until interrupted. Paths are checked before anything loads."""
    import uvicorn

    check_indexes(indexes, two_step)
    print(f"serving {', '.join(indexes)} on http://{host}:{port}/ ({workers} worker{'s' if workers > 1 else ''})",
          flush=True)
    if workers <= 1:
        uvicorn.run(create_app(indexes, threads, limits, query_encoder=query_encoder, force=force,
                               two_step=two_step), host=host, port=port, **uvicorn_options(limits, verbose))
        return
    os.environ[SETTINGS_VARIABLE] = json.dumps({"indexes": {name: str(path) for name, path in indexes.items()},
                                                "threads": threads, "limits": dataclasses.asdict(limits),
                                                "query_encoder": query_encoder, "force": force,
                                                "two_step": two_step})
    uvicorn.run("pipeline.service.server:worker_app", factory=True, workers=workers, host=host, port=port,
                **uvicorn_options(limits, verbose))


def worker_app():
    """The application of one worker process (uvicorn factory), from the parent's settings."""
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    return create_app({name: Path(path) for name, path in settings["indexes"].items()}, settings["threads"],
                      Limits(**settings["limits"]), query_encoder=settings.get("query_encoder"),
                      force=settings.get("force", False), two_step=settings.get("two_step", False))
