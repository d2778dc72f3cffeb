"""The decorator API and its clear errors: bad arguments, bad hub URLs, bad module:app paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from shop import OrderPlaced

from tidings import App, Backoff, Context
from tidings.app.loading import AppNotFound, load_apps


async def test_the_decorated_function_stays_callable_as_it_was() -> None:
    app = App("payments")

    @app.on("orders", retries=5)
    async def charge(order: OrderPlaced, ctx: Context | None = None) -> str:
        return f"charged {order.order_id}"

    assert await charge(OrderPlaced(order_id="o-1", total=3)) == "charged o-1"
    [spec] = app.handlers
    assert (spec.topic, spec.group, spec.retries, spec.concurrency) == ("orders", "payments", 5, 1)
    assert spec.types == ("order.placed",)  # from the model's event_type
    assert spec.dead_letter_topic == "orders.dlq"
    assert spec.wants_ctx


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic": "bad topic"}, "topic 'bad topic' must match"),
        ({"topic": "orders", "group": ""}, "group '' must match"),
        ({"topic": "orders", "group": "webhook.mine"}, "is in the hub's own names"),
        ({"topic": "orders", "group": "tidings.views"}, "is in the hub's own names"),
        ({"topic": "orders", "retries": -1}, "retries must be an integer >= 0"),
        ({"topic": "orders", "retries": True}, "retries must be an integer >= 0"),
        ({"topic": "orders", "concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"topic": "orders", "ordering": "fifo"}, "ordering must be 'none' or 'key'"),
        ({"topic": "orders", "backoff": -1}, "backoff must be non-negative"),
        ({"topic": "orders", "backoff": "soon"}, "backoff must be seconds"),
        ({"topic": "orders", "backoff": [1, -2]}, "backoff must be seconds"),
        ({"topic": "orders", "ack_wait": 0}, "ack_wait must be a positive number"),
        ({"topic": "orders", "start": "now"}, "start must be 'earliest' or 'latest'"),
        ({"topic": "orders", "types": ["order.*", ""]}, "types must be non-empty"),
        ({"topic": "orders", "dead_letter_topic": "no/slash"}, "dead_letter_topic"),
    ],
)
def test_bad_decorator_arguments_are_refused_when_decorating(
    kwargs: dict[str, Any], message: str
) -> None:
    app = App("svc")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):

        @app.on(**kwargs)
        async def handler(data: Any) -> None: ...

    assert app.handlers == []


def test_a_handler_must_be_async_and_take_payload_and_maybe_ctx() -> None:
    app = App("svc")

    def sync_handler(data: Any) -> None: ...

    async def no_args() -> None: ...

    async def three(a: Any, b: Any, c: Any) -> None: ...

    with pytest.raises(TypeError, match="must be an async function"):
        app.on("t")(sync_handler)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"must take \(payload\) or \(payload, ctx\)"):
        app.on("t")(no_args)
    with pytest.raises(TypeError, match=r"not 3 positional parameters"):
        app.on("t")(three)


def test_two_handlers_of_one_topic_and_group_are_refused() -> None:
    app = App("svc")

    @app.on("orders")
    async def first(data: Any) -> None: ...

    with pytest.raises(ValueError, match="give one a group= of its own"):

        @app.on("orders")
        async def second(data: Any) -> None: ...

    @app.on("orders", group="svc-audit")
    async def third(data: Any) -> None: ...

    assert [s.group for s in app.handlers] == ["svc", "svc-audit"]


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        ("127.0.0.1:8700", "is not understood: give http://HOST:PORT"),
        ("ftp://host", "is not understood"),
        ("embedded:", "needs a data directory"),
        ("http://", "names no host"),
        ("nats://127.0.0.1:4222", "not available yet"),
        ("", "must be a URL string"),
    ],
)
def test_a_bad_hub_url_is_refused_with_what_to_give(hub: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        App("svc", hub=hub)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "no spaces"}, "app name 'no spaces' must match"),
        ({"fetch_max": 0}, "fetch_max must be an integer from 1 to 10000"),
        ({"poll_wait": -1}, "poll_wait must be a non-negative number"),
        ({"shutdown_timeout": "soon"}, "shutdown_timeout must be a non-negative number"),
    ],
)
def test_bad_app_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args = {"name": "svc", **kwargs}
    with pytest.raises(ValueError, match=message):
        App(**args)


def test_backoff_schedules() -> None:
    assert [Backoff(1, 2, 5).delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    with pytest.raises(ValueError, match="factor must be a non-negative number"):
        Backoff(factor=-1)


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "svcmod.py").write_text(
        textwrap.dedent(
            """
            from tidings import App
            app = App("one")
            other = App("two")
            both = [app, other]
            not_an_app = 42
            """
        )
    )
    (tmp_path / "brokenmod.py").write_text("import no_such_dependency_here\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "svcmod"


def test_load_apps_finds_apps_and_lists_of_apps(app_module: str) -> None:
    assert [a.name for a in load_apps([f"{app_module}:app"])] == ["one"]
    assert [a.name for a in load_apps([f"{app_module}:both"])] == ["one", "two"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("svcmod", "is not module:attribute"),
        ("svcmod:", "is not module:attribute"),
        ("nosuchmodule:app", "no module named 'nosuchmodule'"),
        ("brokenmod:app", "importing 'brokenmod' failed"),
        ("svcmod:missing", "module 'svcmod' has no attribute 'missing'"),
        ("svcmod:not_an_app", "is a int, not an App"),
    ],
)
def test_a_bad_module_app_path_gets_a_clear_error(
    app_module: str, path: str, message: str
) -> None:
    with pytest.raises(AppNotFound, match=message):
        load_apps([path])


def test_two_apps_of_one_name_are_refused(app_module: str) -> None:
    with pytest.raises(AppNotFound, match="two apps share a name"):
        load_apps(["svcmod:app", "svcmod:both"])


def test_tidings_run_with_a_bad_path_exits_with_the_error(app_module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "run", "svcmod:missing"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "module 'svcmod' has no attribute 'missing'" in done.stderr


def test_tidings_run_against_a_hub_that_does_not_answer_says_so(tmp_path: Path) -> None:
    (tmp_path / "nohub.py").write_text(
        textwrap.dedent(
            """
            from typing import Any
            from tidings import App
            app = App("lonely", hub="http://127.0.0.1:9")

            @app.on("orders")
            async def handle(data: Any) -> None: ...
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "run", "nohub:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot reach the hub at http://127.0.0.1:9" in done.stderr


def test_a_payload_annotation_that_does_not_resolve_is_refused() -> None:
    app = App("svc")

    async def handler(data: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="'NotDefinedAnywhere' does not resolve to a type"):
        app.on("t")(handler)
