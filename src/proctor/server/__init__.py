"""Layer 4: the HTTP server (OTLP receiver, REST API)."""

from proctor.server.app import create_app

__all__ = ["create_app"]
