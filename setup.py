"""Build hook for the native extension (C sources in native/); all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "native._native",
            sources=["native/_native.c", "native/py_ring.c", "native/py_cuckoo.c",
                     "native/fs_ring.c", "native/fs_msg.c", "native/fs_cuckoo.c"],
            depends=["native/fs_ring.h", "native/fs_msg.h", "native/fs_cuckoo.h", "native/py_native.h"],
            extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            libraries=["rt", "pthread", "m"],
        )
    ]
)
