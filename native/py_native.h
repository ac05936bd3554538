/* py_native: how the module door adds each type. */
#ifndef FS_PY_NATIVE_H
#define FS_PY_NATIVE_H

#include <Python.h>

int fs_py_add_ring(PyObject *module);
int fs_py_add_cuckoo(PyObject *module);

#endif
