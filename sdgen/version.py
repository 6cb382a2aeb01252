"""sdgen's version, in a module of its own so that any module may name it without importing the package's
public API (sdgen/__init__.py, which re-exports the engine)."""

__version__ = "0.1.0"
