"""The web console: server-rendered pages (Jinja2, htmx, small vanilla-JS modules), each with a JSON twin.

Every asset is vendored under ``static/``: the console works air-gapped. ``mount_console(app)``
adds the pages, the static files and the error pages to the server's ASGI app.
"""

from proctor.ui.app import mount_console

__all__ = ["mount_console"]
