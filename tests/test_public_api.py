"""The public API is what ``tidings/__init__.py`` exports: complete and sorted."""

import inspect

import tidings
import tidings.errors


def test_all_is_sorted_and_unique() -> None:
    names = [n for n in tidings.__all__ if n != "__version__"]
    assert names == sorted(names)
    assert len(set(tidings.__all__)) == len(tidings.__all__)


def test_all_names_exist() -> None:
    for name in tidings.__all__:
        assert hasattr(tidings, name), name


def test_every_error_is_exported() -> None:
    errors = {
        name
        for name, obj in vars(tidings.errors).items()
        if inspect.isclass(obj) and issubclass(obj, tidings.errors.TidingsError)
    }
    assert errors <= set(tidings.__all__), errors - set(tidings.__all__)


def test_every_public_name_of_the_module_is_in_all() -> None:
    public = {
        name
        for name, obj in vars(tidings).items()
        if not name.startswith("_") and not inspect.ismodule(obj)
    }
    assert public <= set(tidings.__all__), public - set(tidings.__all__)


# The public surface, pinned: a name added, removed or moved here is an API change.
PINNED = {
    "tidings": [
        "App", "AsyncClient", "Backoff", "BadPosition", "BadRequest", "Client", "Conflict",
        "Context", "CorruptLog", "Delivery", "Envelope", "Event", "Forbidden", "GroupNotFound",
        "InvalidEvent", "NotFound", "NotOneHub", "OffsetOutOfRange", "OutcomeUnknown",
        "RateLimited", "Record", "ServerBusy",
        "StaleLease", "StorageError", "StorageUnavailable", "TidingsError", "TooLarge",
        "TopicNotFound", "Unauthorized", "UnsupportedMediaType", "UrlNotAllowed", "ViewBehind",
        "ViewNotFound", "WebhookNotFound", "__version__",
    ],
    "tidings.streams": [
        "DELETED", "Aggregate", "Aggregation", "Count", "EnrichOperator", "EventView",
        "FoldOperator", "Hopping", "InputRecord", "Join", "Max", "Mean", "Merger", "Min",
        "Operator", "Output", "Session", "Sliding", "StreamJoin", "Sum", "Tumbling", "Window",
        "WindowOperator", "window_operator",
    ],
    "tidings.testing": ["TestHub", "VirtualClock"],
    "tidings.webhooks": ["WebhookVerificationError", "verify"],
}


def test_the_public_surface_is_pinned() -> None:
    import importlib

    for name, expected in PINNED.items():
        module = importlib.import_module(name)
        assert list(module.__all__) == expected, name
        for attr in expected:
            assert getattr(module, attr) is not None, f"{name}.{attr}"


def test_the_readme_imports_work() -> None:
    from tidings import App, AsyncClient, Client, Event
    from tidings.testing import TestHub
    from tidings.webhooks import verify

    assert App.__module__ == "tidings.app.app"
    assert AsyncClient.__module__ == "tidings.client.async_client"
    assert Client.__module__ == "tidings.client.sync_client"
    assert Event.__module__ == "tidings.events.envelope"
    assert TestHub.__module__ == "tidings.app.harness"
    assert callable(verify)
