/* py_ring: the Ring type, the Python face of fs_ring (and of fs_msg for encode/decode). Waits release the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>

#include "fs_msg.h"
#include "fs_ring.h"
#include "py_native.h"

typedef struct {
    PyObject_HEAD
    fs_ring ring;
    int open;          /* 0 once close() has run */
    Py_ssize_t exports; /* live buffer views of the segment */
    Py_ssize_t inflight; /* calls running with the GIL released */
} RingObject;

static PyTypeObject RingType;

/* One error vocabulary: builtin classes, which mesh.errors subclasses (TimeoutError, ConnectionError, ValueError). */
static PyObject *ring_error(int rc, const char *what) {
    switch (-rc) {
    case ETIMEDOUT: PyErr_Format(PyExc_TimeoutError, "%s: deadline passed", what); break;
    case EPIPE: PyErr_Format(PyExc_BrokenPipeError, "%s: the peer is gone or closing", what); break;
    case EBUSY: PyErr_Format(PyExc_ConnectionRefusedError, "%s: no free lane in the ring", what); break;
    case ENOENT: PyErr_Format(PyExc_FileNotFoundError, "%s: no such segment", what); break;
    case EEXIST: PyErr_Format(PyExc_FileExistsError, "%s: segment exists", what); break;
    case EPROTO: PyErr_Format(PyExc_ValueError, "%s: corrupt shared state", what); break;
    case EINVAL: PyErr_Format(PyExc_ValueError, "%s: invalid argument", what); break;
    default: errno = -rc; PyErr_SetFromErrno(PyExc_OSError); break;
    }
    return NULL;
}

static int ring_usable(RingObject *self) {
    if (!self->open) {
        PyErr_SetString(PyExc_ValueError, "ring is closed");
        return 0;
    }
    return 1;
}

static int64_t deadline_from(double timeout_s) {
    if (timeout_s < 0) timeout_s = 0;
    if (timeout_s > 1e6) timeout_s = 1e6;
    return fs_ring_now_ns() + (int64_t)(timeout_s * 1e9);
}

static int check_slot(RingObject *self, long slot) {
    if (slot < 0 || (uint64_t)slot >= fs_ring_slot_count(&self->ring)) {
        PyErr_Format(PyExc_ValueError, "slot %ld is out of range", slot);
        return 0;
    }
    return 1;
}

static RingObject *ring_new_object(void) {
    RingObject *self = PyObject_New(RingObject, &RingType);
    if (self == NULL) return NULL;
    memset(&self->ring, 0, sizeof self->ring);
    self->open = 0;
    self->exports = 0;
    self->inflight = 0;
    return self;
}

static PyObject *Ring_create(PyObject *cls, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"name", "lanes", "slots_per_lane", "request_capacity", "response_capacity", NULL};
    const char *name;
    unsigned int lanes = 8, slots = 4;
    unsigned long long req = 1 << 20, resp = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|IIKK", kw, &name, &lanes, &slots, &req, &resp)) return NULL;
    RingObject *self = ring_new_object();
    if (self == NULL) return NULL;
    int rc = fs_ring_create(&self->ring, name, lanes, slots, req, resp);
    if (rc != 0) {
        Py_DECREF(self);
        return ring_error(rc, name);
    }
    self->open = 1;
    return (PyObject *)self;
}

static PyObject *Ring_attach(PyObject *cls, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    RingObject *self = ring_new_object();
    if (self == NULL) return NULL;
    int rc = fs_ring_attach(&self->ring, name);
    if (rc != 0) {
        Py_DECREF(self);
        return ring_error(rc, name);
    }
    self->open = 1;
    return (PyObject *)self;
}

static PyObject *Ring_close(RingObject *self, PyObject *unused) {
    if (!self->open) Py_RETURN_NONE;
    if (self->inflight > 0) {
        PyErr_Format(PyExc_BufferError, "ring is in use by %zd calls", self->inflight);
        return NULL;
    }
    self->open = 0;
    fs_ring_detach(&self->ring);
    if (self->exports == 0) fs_ring_unmap(&self->ring); /* else the last view's release unmaps */
    Py_RETURN_NONE;
}

static PyObject *Ring_shutdown(RingObject *self, PyObject *unused) {
    if (!ring_usable(self)) return NULL;
    fs_ring_detach(&self->ring); /* server: closing + wake + unlink; the mapping stays for in-flight work */
    Py_RETURN_NONE;
}

static PyObject *Ring_claim(RingObject *self, PyObject *args) {
    double timeout;
    if (!PyArg_ParseTuple(args, "d", &timeout) || !ring_usable(self)) return NULL;
    uint32_t slot;
    int64_t deadline = deadline_from(timeout);
    int rc = fs_ring_claim(&self->ring, fs_ring_now_ns(), &slot); /* a free slot: no need to drop the GIL */
    if (rc == -ETIMEDOUT) {
        self->inflight++;
        Py_BEGIN_ALLOW_THREADS
        rc = fs_ring_claim(&self->ring, deadline, &slot);
        Py_END_ALLOW_THREADS
        self->inflight--;
    }
    if (rc != 0) return ring_error(rc, "claim");
    return PyLong_FromUnsignedLong(slot);
}

static PyObject *Ring_call(RingObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"slot", "request_len", "timeout", "spin_us", "stale_s", NULL};
    long slot;
    unsigned long long len;
    double timeout, spin_us = 50, stale_s = 0.5;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "lKd|dd", kw, &slot, &len, &timeout, &spin_us, &stale_s)) return NULL;
    if (!ring_usable(self) || !check_slot(self, slot)) return NULL;
    int64_t deadline = deadline_from(timeout);
    uint64_t response_len = 0;
    int rc = fs_ring_submit(&self->ring, (uint32_t)slot, len);
    if (rc != 0) return ring_error(rc, "submit");
    self->inflight++;
    Py_BEGIN_ALLOW_THREADS
    rc = fs_ring_wait(&self->ring, (uint32_t)slot, deadline, (int64_t)(spin_us * 1e3), (int64_t)(stale_s * 1e9),
                      &response_len);
    Py_END_ALLOW_THREADS
    self->inflight--;
    if (rc != 0) return ring_error(rc, "call");
    return PyLong_FromUnsignedLongLong(response_len);
}

static PyObject *Ring_release(RingObject *self, PyObject *args) {
    long slot;
    if (!PyArg_ParseTuple(args, "l", &slot) || !ring_usable(self) || !check_slot(self, slot)) return NULL;
    if (fs_ring_release(&self->ring, (uint32_t)slot) != 0)
        return PyErr_Format(PyExc_ValueError, "slot %ld is not held by this client: release refused", slot);
    Py_RETURN_NONE;
}

static PyObject *Ring_next(RingObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"timeout", "spin_us", NULL};
    double timeout, spin_us = 50;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "d|d", kw, &timeout, &spin_us) || !ring_usable(self)) return NULL;
    uint32_t slot;
    uint64_t len = 0;
    int64_t deadline = deadline_from(timeout);
    int rc;
    self->inflight++;
    Py_BEGIN_ALLOW_THREADS
    rc = fs_ring_next(&self->ring, deadline, (int64_t)(spin_us * 1e3), &slot, &len);
    Py_END_ALLOW_THREADS
    self->inflight--;
    if (rc == -ETIMEDOUT) Py_RETURN_NONE;
    if (rc != 0) return ring_error(rc, "next");
    return Py_BuildValue("(kK)", (unsigned long)slot, (unsigned long long)len);
}

static PyObject *Ring_complete(RingObject *self, PyObject *args) {
    long slot;
    unsigned long long len;
    if (!PyArg_ParseTuple(args, "lK", &slot, &len) || !ring_usable(self) || !check_slot(self, slot)) return NULL;
    int rc = fs_ring_complete(&self->ring, (uint32_t)slot, len);
    if (rc == -ETIMEDOUT) Py_RETURN_FALSE; /* the client gave up; the slot is free again */
    if (rc != 0) return ring_error(rc, "complete");
    Py_RETURN_TRUE;
}

static PyObject *Ring_reap(RingObject *self, PyObject *unused) {
    if (!ring_usable(self)) return NULL;
    return PyLong_FromLong(fs_ring_reap(&self->ring));
}

static PyObject *Ring_alive(RingObject *self, PyObject *args) {
    double stale_s = 0.5;
    if (!PyArg_ParseTuple(args, "|d", &stale_s)) return NULL;
    if (!self->open) Py_RETURN_FALSE;
    return PyBool_FromLong(fs_ring_server_alive(&self->ring, (int64_t)(stale_s * 1e9)));
}

static uint8_t *area_of(RingObject *self, uint32_t slot, int side, uint64_t *capacity) {
    *capacity = side ? self->ring.layout.response_capacity : self->ring.layout.request_capacity;
    return side ? fs_ring_response_area(&self->ring, slot) : fs_ring_request_area(&self->ring, slot);
}

static PyObject *Ring_area_offset(RingObject *self, PyObject *args) {
    long slot;
    int side;
    if (!PyArg_ParseTuple(args, "lp", &slot, &side) || !ring_usable(self) || !check_slot(self, slot)) return NULL;
    uint64_t capacity;
    uint8_t *area = area_of(self, (uint32_t)slot, side, &capacity);
    return PyLong_FromUnsignedLongLong((unsigned long long)(area - self->ring.base));
}

static int copy_string(char *dst, size_t cap, PyObject *src, const char *field) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(src, &n);
    if (s == NULL) return 0;
    if ((size_t)n >= cap) {
        PyErr_Format(PyExc_ValueError, "%s is longer than %zu bytes", field, cap - 1);
        return 0;
    }
    memset(dst, 0, cap);
    memcpy(dst, s, (size_t)n);
    return 1;
}

/* encode(slot, side, method, status, request_id, deadline_ns, traceparent, feature_tag, proto, tensors) -> length
 * tensors: sequence of (name, dtype, shape, offset) with offsets relative to the area, data already written. */
static PyObject *Ring_encode(RingObject *self, PyObject *args) {
    long slot;
    int side;
    unsigned int method, status;
    unsigned long long request_id;
    long long deadline;
    PyObject *traceparent, *tag, *tensors;
    Py_buffer proto;
    if (!PyArg_ParseTuple(args, "lpIIKLUUy*O", &slot, &side, &method, &status, &request_id, &deadline, &traceparent,
                          &tag, &proto, &tensors))
        return NULL;
    PyObject *result = NULL, *seq = NULL;
    if (!ring_usable(self) || !check_slot(self, slot)) goto done;
    if (method > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "method id exceeds 65535");
        goto done;
    }
    seq = PySequence_Fast(tensors, "tensors must be a sequence");
    if (seq == NULL) goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > (Py_ssize_t)FS_MSG_MAX_TENSORS) {
        PyErr_Format(PyExc_ValueError, "at most %u tensors per message", FS_MSG_MAX_TENSORS);
        goto done;
    }
    uint64_t capacity;
    uint8_t *area = area_of(self, (uint32_t)slot, side, &capacity);
    fs_msg_header h;
    memset(&h, 0, sizeof h);
    h.magic = FS_MSG_MAGIC;
    h.method = (uint16_t)method;
    h.status = status;
    h.request_id = request_id;
    h.deadline_ns = deadline;
    h.tensor_count = (uint16_t)count;
    if (!copy_string(h.traceparent, sizeof h.traceparent, traceparent, "traceparent")) goto done;
    if (!copy_string(h.feature_tag, sizeof h.feature_tag, tag, "feature_tag")) goto done;
    uint64_t end = FS_MSG_DATA_OFFSET;
    for (Py_ssize_t i = 0; i < count; i++) {
        fs_tensor_desc d;
        memset(&d, 0, sizeof d);
        PyObject *name, *shape;
        unsigned char dtype;
        unsigned long long offset;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "UbOK", &name, &dtype, &shape, &offset)) goto done;
        if (!copy_string(d.name, sizeof d.name, name, "tensor name")) goto done;
        PyObject *dims = PySequence_Fast(shape, "shape must be a sequence");
        if (dims == NULL) goto done;
        Py_ssize_t ndim = PySequence_Fast_GET_SIZE(dims);
        if (ndim > (Py_ssize_t)FS_MSG_MAX_DIMS) {
            Py_DECREF(dims);
            PyErr_Format(PyExc_ValueError, "tensor %s has more than %u dimensions", d.name, FS_MSG_MAX_DIMS);
            goto done;
        }
        uint64_t n = fs_dtype_size(dtype);
        for (Py_ssize_t k = 0; k < ndim; k++) {
            d.shape[k] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(dims, k));
            if (d.shape[k] < 0) {
                Py_DECREF(dims);
                if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "tensor %s has a negative dimension", d.name);
                goto done;
            }
            n *= (uint64_t)d.shape[k];
        }
        Py_DECREF(dims);
        d.dtype = dtype;
        d.ndim = (uint8_t)ndim;
        d.offset = offset;
        d.nbytes = n;
        if (offset > capacity || n > capacity - offset) {
            PyErr_Format(PyExc_ValueError, "tensor %s does not fit in the slot", d.name);
            goto done;
        }
        if (offset + n > end) end = offset + n;
        memcpy(area + sizeof h + (size_t)i * sizeof d, &d, sizeof d);
    }
    h.proto_offset = (end + FS_MSG_ALIGN - 1) / FS_MSG_ALIGN * FS_MSG_ALIGN;
    h.proto_len = (uint32_t)proto.len;
    if ((uint64_t)proto.len > 0xffffffffu || h.proto_offset > capacity || (uint64_t)proto.len > capacity - h.proto_offset) {
        PyErr_SetString(PyExc_ValueError, "message does not fit in the slot");
        goto done;
    }
    memcpy(area + h.proto_offset, proto.buf, (size_t)proto.len);
    h.total_len = h.proto_offset + (uint64_t)proto.len;
    memcpy(area, &h, sizeof h);
    char err[160];
    if (fs_msg_validate(area, h.total_len, err, sizeof err) != 0) { /* our own writer must never emit garbage */
        PyErr_Format(PyExc_ValueError, "encoded message is invalid: %s", err);
        goto done;
    }
    result = PyLong_FromUnsignedLongLong(h.total_len);
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&proto);
    return result;
}

/* decode(slot, side, length) -> (method, status, request_id, deadline_ns, traceparent, feature_tag,
 *                                 proto_offset, proto_len, ((name, dtype, shape, offset), ...))
 * Offsets are from the start of the segment. Raises ValueError naming the bad field. */
static PyObject *Ring_decode(RingObject *self, PyObject *args) {
    long slot;
    int side;
    unsigned long long len;
    if (!PyArg_ParseTuple(args, "lpK", &slot, &side, &len) || !ring_usable(self) || !check_slot(self, slot)) return NULL;
    uint64_t capacity;
    uint8_t *area = area_of(self, (uint32_t)slot, side, &capacity);
    if (len > capacity) return PyErr_Format(PyExc_ValueError, "message length %llu exceeds the slot", len);
    char err[160];
    fs_msg_snapshot m; /* the only copy we use: the slot itself may change under us */
    if (fs_msg_read(area, len, &m, err, sizeof err) != 0) return PyErr_Format(PyExc_ValueError, "%s", err);
    const fs_msg_header *h = &m.header;
    uint64_t base = (uint64_t)(area - self->ring.base);
    PyObject *tensors = PyTuple_New(h->tensor_count);
    if (tensors == NULL) return NULL;
    for (uint16_t i = 0; i < h->tensor_count; i++) {
        const fs_tensor_desc *d = &m.tensors[i];
        PyObject *shape = PyTuple_New(d->ndim);
        if (shape == NULL) goto fail;
        for (uint8_t k = 0; k < d->ndim; k++) PyTuple_SET_ITEM(shape, k, PyLong_FromLongLong(d->shape[k]));
        PyObject *item = Py_BuildValue("(sBNK)", d->name, d->dtype, shape, (unsigned long long)(base + d->offset));
        if (item == NULL) goto fail;
        PyTuple_SET_ITEM(tensors, i, item);
    }
    return Py_BuildValue("(IIKLssKIN)", (unsigned)h->method, h->status, (unsigned long long)h->request_id,
                         (long long)h->deadline_ns, h->traceparent, h->feature_tag,
                         (unsigned long long)(base + h->proto_offset), h->proto_len, tensors);
fail:
    Py_DECREF(tensors);
    return NULL;
}

static int Ring_getbuffer(RingObject *self, Py_buffer *view, int flags) {
    if (!self->open) {
        PyErr_SetString(PyExc_BufferError, "ring is closed");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->ring.base, (Py_ssize_t)self->ring.size, 0, flags) < 0) return -1;
    self->exports++;
    return 0;
}

static void Ring_releasebuffer(RingObject *self, Py_buffer *view) {
    if (--self->exports == 0 && !self->open) fs_ring_unmap(&self->ring);
}

static void Ring_dealloc(RingObject *self) {
    /* exports hold a reference to us, so none are alive here */
    if (self->ring.base != NULL) fs_ring_close(&self->ring);
    PyObject_Free(self);
}

static PyObject *Ring_get(RingObject *self, void *which) {
    if (self->ring.hdr == NULL) return PyErr_Format(PyExc_ValueError, "ring is closed");
    fs_ring_header *h = self->ring.hdr;
    switch ((intptr_t)which) {
    case 0: return PyUnicode_FromString(self->ring.name);
    case 1: return PyLong_FromUnsignedLongLong(self->ring.size);
    case 2: return PyLong_FromVoidPtr(self->ring.base);
    case 3: return PyLong_FromUnsignedLong(fs_ring_slot_count(&self->ring));
    case 4: return PyLong_FromUnsignedLongLong(self->ring.layout.request_capacity);
    case 5: return PyLong_FromUnsignedLongLong(self->ring.layout.response_capacity);
    case 6: return PyLong_FromLong(h->server_pid);
    case 7: return PyLong_FromLong(self->ring.lane);
    case 8: return PyLong_FromUnsignedLong(self->ring.layout.slots_per_lane);
    default: Py_RETURN_NONE;
    }
}

static PyGetSetDef Ring_getset[] = {
    {"name", (getter)Ring_get, NULL, "the shm segment name", (void *)0},
    {"size", (getter)Ring_get, NULL, "bytes mapped", (void *)1},
    {"address", (getter)Ring_get, NULL, "address of the mapping in this process", (void *)2},
    {"slot_count", (getter)Ring_get, NULL, "slots over all lanes", (void *)3},
    {"request_capacity", (getter)Ring_get, NULL, "bytes of a request area", (void *)4},
    {"response_capacity", (getter)Ring_get, NULL, "bytes of a response area", (void *)5},
    {"server_pid", (getter)Ring_get, NULL, "pid of the process that owns the segment", (void *)6},
    {"lane", (getter)Ring_get, NULL, "the lane this client owns (-1 on the server)", (void *)7},
    {"slots_per_lane", (getter)Ring_get, NULL, "slots in each lane", (void *)8},
    {NULL},
};

static PyMethodDef Ring_methods[] = {
    {"create", (PyCFunction)(void (*)(void))Ring_create, METH_CLASS | METH_VARARGS | METH_KEYWORDS,
     "create(name, lanes=8, slots_per_lane=4, request_capacity=1MiB, response_capacity=1MiB): own a new segment"},
    {"attach", (PyCFunction)Ring_attach, METH_CLASS | METH_VARARGS, "attach(name): map a segment and claim a lane"},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "detach; the server also unlinks the segment"},
    {"shutdown", (PyCFunction)Ring_shutdown, METH_NOARGS,
     "server: mark the ring closing and wake every waiter (they fail over); keeps the mapping until close()"},
    {"claim", (PyCFunction)Ring_claim, METH_VARARGS, "claim(timeout) -> slot: a free slot of our lane (waits: backpressure)"},
    {"call", (PyCFunction)(void (*)(void))Ring_call, METH_VARARGS | METH_KEYWORDS,
     "call(slot, request_len, timeout, spin_us=50, stale_s=0.5) -> response_len: submit and wait"},
    {"release", (PyCFunction)Ring_release, METH_VARARGS, "release(slot): the response has been read"},
    {"next", (PyCFunction)(void (*)(void))Ring_next, METH_VARARGS | METH_KEYWORDS,
     "next(timeout, spin_us=50) -> (slot, request_len) | None: the next request (server)"},
    {"complete", (PyCFunction)Ring_complete, METH_VARARGS, "complete(slot, response_len) -> delivered (server)"},
    {"reap", (PyCFunction)Ring_reap, METH_NOARGS, "reap() -> lanes freed from dead clients (server)"},
    {"alive", (PyCFunction)Ring_alive, METH_VARARGS, "alive(stale_s=0.5) -> the server runs and its heartbeat is fresh"},
    {"area_offset", (PyCFunction)Ring_area_offset, METH_VARARGS, "area_offset(slot, response) -> offset in the segment"},
    {"encode", (PyCFunction)Ring_encode, METH_VARARGS, "write a message header; see native/_native.pyi"},
    {"decode", (PyCFunction)Ring_decode, METH_VARARGS, "validate and read a message header; see native/_native.pyi"},
    {NULL},
};

static PyBufferProcs Ring_as_buffer = {(getbufferproc)Ring_getbuffer, (releasebufferproc)Ring_releasebuffer};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "native._native.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A shared-memory request/response ring (see native/fs_ring.h).",
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
    .tp_as_buffer = &Ring_as_buffer,
};


int fs_py_add_ring(PyObject *module) {
    if (PyType_Ready(&RingType) < 0) return -1;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(module, "Ring", (PyObject *)&RingType) < 0) return -1;
    PyModule_AddIntConstant(module, "MSG_DATA_OFFSET", (long)FS_MSG_DATA_OFFSET);
    PyModule_AddIntConstant(module, "MSG_ALIGN", FS_MSG_ALIGN);
    PyModule_AddIntConstant(module, "MSG_MAX_TENSORS", FS_MSG_MAX_TENSORS);
    PyModule_AddIntConstant(module, "MSG_NAME_MAX", FS_MSG_NAME_MAX);
    return 0;
}
