"""The search service: warm SPLADE indexes behind an HTTP API and a page that explains rankings.

``backend`` holds the indexes and encoders (no HTTP), ``guard`` the request limits, ``app`` the
FastAPI application (``create_app``) and ``server`` runs it under uvicorn (``serve``).
"""

from pipeline.service.app import create_app
from pipeline.service.server import serve

__all__ = ["create_app", "serve"]
