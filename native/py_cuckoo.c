/* py_cuckoo: the CuckooTable type, the Python face of fs_cuckoo. Every batch releases the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>

#include "fs_cuckoo.h"
#include "py_native.h"

typedef struct {
    PyObject_HEAD
    fs_cuckoo table;
    int ready;
} CuckooObject;

static PyTypeObject CuckooType;

/* Every method first: a table made with __new__ alone has no buckets to touch. */
static int cuckoo_ready(CuckooObject *self) {
    if (!self->ready) PyErr_SetString(PyExc_ValueError, "CuckooTable is not initialised: call CuckooTable(dim, ...)");
    return self->ready;
}

static int Cuckoo_init(CuckooObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"dim", "precision", "expected", "admit_after", NULL};
    unsigned int dim, admit_after = 1;
    const char *precision = "fp32";
    unsigned long long expected = 1024;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "I|sKI", kw, &dim, &precision, &expected, &admit_after)) return -1;
    uint32_t code;
    if (strcmp(precision, "fp32") == 0) code = FS_PREC_F32;
    else if (strcmp(precision, "fp16") == 0) code = FS_PREC_F16;
    else if (strcmp(precision, "int8") == 0) code = FS_PREC_I8;
    else {
        PyErr_Format(PyExc_ValueError, "precision is expected to be fp32, fp16 or int8, got '%s'", precision);
        return -1;
    }
    /* Never re-initialise: a lookup on another thread may be inside the table with the GIL released. */
    if (self->ready) {
        PyErr_SetString(PyExc_TypeError, "CuckooTable is already initialised: make a new table instead");
        return -1;
    }
    int rc = fs_cuckoo_init(&self->table, dim, code, expected, admit_after);
    if (rc == -EINVAL) {
        PyErr_Format(PyExc_ValueError, "dim is expected in 1..65536, got %u", dim);
        return -1;
    }
    if (rc != 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->ready = 1;
    return 0;
}

static void Cuckoo_dealloc(CuckooObject *self) {
    if (self->ready) fs_cuckoo_free(&self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Check that `buf` holds exactly `count` items of `size` bytes; names the argument when it does not. */
static int check_len(Py_buffer *buf, uint64_t count, size_t size, const char *name) {
    if ((uint64_t)buf->len != count * size) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %llu", name, buf->len,
                     (unsigned long long)(count * size));
        return 0;
    }
    return 1;
}

static PyObject *Cuckoo_lookup_into(CuckooObject *self, PyObject *args) {
    if (!cuckoo_ready(self)) return NULL; /* before any buffer is taken */
    Py_buffer keys, out, found;
    unsigned int now = 0, ttl = 0;
    if (!PyArg_ParseTuple(args, "y*w*w*|II", &keys, &out, &found, &now, &ttl)) return NULL;
    PyObject *result = NULL;
    uint64_t n = (uint64_t)keys.len / 8, hits = 0;
    fs_cuckoo *t = &self->table;
    if (keys.len % 8 == 0 && check_len(&out, n * t->dim, 4, "out") && check_len(&found, n, 1, "found")) {
        Py_BEGIN_ALLOW_THREADS
        hits = fs_cuckoo_lookup(t, keys.buf, n, out.buf, found.buf, now, ttl);
        Py_END_ALLOW_THREADS
        result = PyLong_FromUnsignedLongLong(hits);
    } else if (keys.len % 8) {
        PyErr_SetString(PyExc_ValueError, "keys are expected to be 64-bit");
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&out);
    PyBuffer_Release(&found);
    return result;
}

static PyObject *Cuckoo_upsert_into(CuckooObject *self, PyObject *args) {
    if (!cuckoo_ready(self)) return NULL; /* before any buffer is taken */
    Py_buffer keys, values, status;
    unsigned int now = 0;
    int admit = 1;
    if (!PyArg_ParseTuple(args, "y*y*w*|Ip", &keys, &values, &status, &now, &admit)) return NULL;
    PyObject *result = NULL;
    uint64_t n = (uint64_t)keys.len / 8;
    fs_cuckoo *t = &self->table;
    if (check_len(&keys, n, 8, "keys") && check_len(&values, n * t->dim, 4, "values") && check_len(&status, n, 1, "status")) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = fs_cuckoo_upsert(t, keys.buf, n, values.buf, status.buf, now, admit);
        Py_END_ALLOW_THREADS
        if (rc == -EINVAL) PyErr_SetString(PyExc_ValueError, "keys: 0 is reserved and cannot be stored");
        else if (rc != 0) PyErr_NoMemory();
        else result = Py_None, Py_INCREF(result);
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&values);
    PyBuffer_Release(&status);
    return result;
}

static PyObject *Cuckoo_drift_into(CuckooObject *self, PyObject *args) {
    if (!cuckoo_ready(self)) return NULL; /* before any buffer is taken */
    Py_buffer keys, targets, rates, out, status;
    unsigned int now = 0;
    int commit = 1;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*|Ip", &keys, &targets, &rates, &out, &status, &now, &commit)) return NULL;
    PyObject *result = NULL;
    uint64_t n = (uint64_t)keys.len / 8;
    fs_cuckoo *t = &self->table;
    if (check_len(&keys, n, 8, "keys") && check_len(&targets, n * t->dim, 4, "targets") &&
        check_len(&rates, n, 4, "rates") && check_len(&out, n * t->dim, 4, "out") && check_len(&status, n, 1, "status")) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = fs_cuckoo_drift(t, keys.buf, n, targets.buf, rates.buf, out.buf, status.buf, now, commit);
        Py_END_ALLOW_THREADS
        if (rc != 0) PyErr_NoMemory();
        else result = Py_None, Py_INCREF(result);
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&targets);
    PyBuffer_Release(&rates);
    PyBuffer_Release(&out);
    PyBuffer_Release(&status);
    return result;
}

static PyObject *Cuckoo_expire(CuckooObject *self, PyObject *args) {
    if (!cuckoo_ready(self)) return NULL; /* before any buffer is taken */
    unsigned int now, ttl;
    if (!PyArg_ParseTuple(args, "II", &now, &ttl)) return NULL;
    uint64_t removed;
    Py_BEGIN_ALLOW_THREADS
    removed = fs_cuckoo_expire(&self->table, now, ttl);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(removed);
}

static PyObject *Cuckoo_remove_into(CuckooObject *self, PyObject *args) {
    if (!cuckoo_ready(self)) return NULL; /* before any buffer is taken */
    Py_buffer keys, removed;
    if (!PyArg_ParseTuple(args, "y*w*", &keys, &removed)) return NULL;
    PyObject *result = NULL;
    uint64_t n = keys.len / sizeof(uint64_t);
    if (keys.len % sizeof(uint64_t) || (uint64_t)removed.len != n) {
        PyErr_SetString(PyExc_ValueError, "remove_into: keys must be uint64 and removed one byte per key");
    } else {
        uint64_t count;
        Py_BEGIN_ALLOW_THREADS
        count = fs_cuckoo_remove(&self->table, keys.buf, n, removed.buf);
        Py_END_ALLOW_THREADS
        result = PyLong_FromUnsignedLongLong(count);
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&removed);
    return result;
}

static PyObject *Cuckoo_export_into(CuckooObject *self, PyObject *args) {
    if (!cuckoo_ready(self)) return NULL; /* before any buffer is taken */
    Py_buffer keys, rows, stamps;
    if (!PyArg_ParseTuple(args, "w*w*w*", &keys, &rows, &stamps)) return NULL;
    PyObject *result = NULL;
    uint64_t n = (uint64_t)keys.len / 8;
    if (check_len(&rows, n * self->table.dim, 4, "rows") && check_len(&stamps, n, 4, "stamps")) {
        uint64_t got;
        Py_BEGIN_ALLOW_THREADS
        got = fs_cuckoo_export(&self->table, keys.buf, rows.buf, stamps.buf, n);
        Py_END_ALLOW_THREADS
        result = PyLong_FromUnsignedLongLong(got);
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&stamps);
    return result;
}

static PyObject *Cuckoo_get(CuckooObject *self, void *which) {
    if (!cuckoo_ready(self)) return NULL;
    fs_cuckoo *t = &self->table;
    switch ((intptr_t)which) {
    case 0: return PyLong_FromUnsignedLongLong(t->size);
    case 1: return PyLong_FromUnsignedLongLong(fs_cuckoo_bytes(t));
    case 2: return PyLong_FromUnsignedLong(t->dim);
    case 3: return PyUnicode_FromString(t->precision == FS_PREC_F32 ? "fp32" : t->precision == FS_PREC_F16 ? "fp16" : "int8");
    case 4: return PyLong_FromUnsignedLongLong(t->bucket_count);
    default: return PyLong_FromUnsignedLong(t->stash_used);
    }
}

static PyGetSetDef Cuckoo_getset[] = {
    {"size", (getter)Cuckoo_get, NULL, "keys stored", (void *)0},
    {"bytes", (getter)Cuckoo_get, NULL, "bytes held by buckets, rows and counters", (void *)1},
    {"dim", (getter)Cuckoo_get, NULL, "values per row", (void *)2},
    {"precision", (getter)Cuckoo_get, NULL, "fp32, fp16 or int8", (void *)3},
    {"bucket_count", (getter)Cuckoo_get, NULL, "buckets of 4 slots", (void *)4},
    {"stash_used", (getter)Cuckoo_get, NULL, "keys in the overflow stash", (void *)5},
    {NULL},
};

static PyMethodDef Cuckoo_methods[] = {
    {"lookup_into", (PyCFunction)Cuckoo_lookup_into, METH_VARARGS, "lookup_into(keys, out, found, now_s=0, ttl_s=0) -> hits"},
    {"upsert_into", (PyCFunction)Cuckoo_upsert_into, METH_VARARGS, "upsert_into(keys, values, status, now_s=0, admit=True)"},
    {"drift_into", (PyCFunction)Cuckoo_drift_into, METH_VARARGS, "drift_into(keys, targets, rates, out, status, now_s=0, commit=True)"},
    {"expire", (PyCFunction)Cuckoo_expire, METH_VARARGS, "expire(now_s, ttl_s) -> removed"},
    {"remove_into", (PyCFunction)Cuckoo_remove_into, METH_VARARGS, "remove_into(keys, removed) -> count"},
    {"export_into", (PyCFunction)Cuckoo_export_into, METH_VARARGS, "export_into(keys, rows, stamps) -> count"},
    {NULL},
};

static PyTypeObject CuckooType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "native._native.CuckooTable",
    .tp_basicsize = sizeof(CuckooObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A bucketised cuckoo table of embeddings (see native/fs_cuckoo.h).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cuckoo_init,
    .tp_dealloc = (destructor)Cuckoo_dealloc,
    .tp_methods = Cuckoo_methods,
    .tp_getset = Cuckoo_getset,
};


int fs_py_add_cuckoo(PyObject *module) {
    if (PyType_Ready(&CuckooType) < 0) return -1;
    Py_INCREF(&CuckooType);
    return PyModule_AddObject(module, "CuckooTable", (PyObject *)&CuckooType);
}
