"""One route per path, so a 405 names every method the path takes.

Starlette answers a path with the first route whose path matches; when that
route lacks the request's method its 405 ``Allow`` header lists that route's
methods only, though a later route of the same path may take others. RFC 9110
section 15.5.6 wants them all: :func:`one_route_per_path` folds the routes of
each path into one that dispatches on the method.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class MethodDispatch:
    """An ASGI app that hands a request to the app its method maps to."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The Route only lets in the methods it was given: the keys of ``apps``.
        await self.apps[scope["method"]](scope, receive, send)


def one_route_per_path(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """``routes`` with the :class:`Route` s of one path merged, in order of first appearance."""
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        if isinstance(route, Route):
            by_path.setdefault(route.path, []).append(route)
    merged: list[BaseRoute] = []
    for route in routes:
        if not isinstance(route, Route):
            merged.append(route)
            continue
        same = by_path.pop(route.path, None)
        if same is None:
            continue  # folded into the first route of its path
        if len(same) == 1:
            merged.append(route)
            continue
        apps = {method: r.app for r in same for method in r.methods or ()}
        merged.append(Route(route.path, MethodDispatch(apps), methods=list(apps)))
    return merged


__all__ = ["MethodDispatch", "one_route_per_path"]
