/* _native: the Python door to the C core: the Ring (py_ring.c) and the CuckooTable (py_cuckoo.c). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "py_native.h"

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "feedserve's C core.", -1, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (fs_py_add_ring(m) < 0 || fs_py_add_cuckoo(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
