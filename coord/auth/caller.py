"""Who is calling: set by the API's auth guard for the duration of one call (a context
variable, so it follows the call's task into ``propose``), read by the member when it
stamps a proposed request with its sender (``InternalRequest.header``).

``None``: no auth check applies to the call (auth was disabled when the call arrived);
``""``: auth was enabled and the call carried no token (etcd's "user name is empty").
"""

from __future__ import annotations

from contextvars import ContextVar

caller: ContextVar[str | None] = ContextVar("coord_auth_caller", default=None)
