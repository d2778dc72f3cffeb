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
