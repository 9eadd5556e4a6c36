"""The Python SDK (Producer, Consumer, Admin) and the `raftka` command line; users import
them from `raftka` (see raftka/__init__.py)."""
