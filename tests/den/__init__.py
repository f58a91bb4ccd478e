"""Den's tests. A package, so that its conftest does not replace ``tests/conftest.py`` as the
module named ``conftest`` that other tests import helpers from."""
