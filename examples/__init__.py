"""Runnable examples (``uvicorn examples.fastapi_app:app`` needs this to be a package)."""
