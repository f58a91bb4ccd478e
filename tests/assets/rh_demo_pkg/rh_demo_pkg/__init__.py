"""A tiny package the tests install into envs from a local folder."""

VERSION = "0.3.0"


def greet(name):
    return f"hello {name} from rh_demo_pkg"
