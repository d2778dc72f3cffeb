"""AsyncAPI component keys: safe, and one per name."""

from tidings.core.catalog import ComponentIds


def test_component_ids_are_safe_and_never_shared() -> None:
    ids = ComponentIds()
    assert ids("order.placed") == "order.placed"
    assert ids("a/b") == "a_b"
    assert ids("a_b") == "a_b_2"  # not the message of "a/b"
    assert ids("a b") == "a_b_3"
    assert ids("a/b") == "a_b"  # the same name, the same key
    assert ids("") == "_"
