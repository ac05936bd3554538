"""Build hook for the native extension (C sources in native/); all metadata lives in pyproject.toml."""

from setuptools import setup

setup()
