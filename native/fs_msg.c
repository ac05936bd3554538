/* fs_msg: validation of a message read from shared memory. Every field is hostile until checked. */
#include "fs_msg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

uint32_t fs_dtype_size(uint8_t dtype) {
    switch (dtype) {
    case FS_F32: case FS_I32: return 4;
    case FS_F16: return 2;
    case FS_I64: return 8;
    case FS_I8: case FS_U8: return 1;
    default: return 0;
    }
}

#define FAIL(...) do { snprintf(err, err_len, __VA_ARGS__); return -EINVAL; } while (0)

/* Checks the private snapshot only; never touches shared memory. */
static int fs_msg_check(const fs_msg_snapshot *m, uint64_t len, char *err, size_t err_len) {
    const fs_msg_header *h = &m->header;
    if (h->magic != FS_MSG_MAGIC) FAIL("magic 0x%08x is not a feedserve message", h->magic);
    if (h->total_len != len) FAIL("total_len %llu does not match the slot length %llu",
                                  (unsigned long long)h->total_len, (unsigned long long)len);
    if (h->tensor_count > FS_MSG_MAX_TENSORS) FAIL("tensor_count %u exceeds %u", h->tensor_count, FS_MSG_MAX_TENSORS);
    if (memchr(h->traceparent, 0, sizeof h->traceparent) == NULL) FAIL("traceparent is not terminated");
    if (memchr(h->feature_tag, 0, sizeof h->feature_tag) == NULL) FAIL("feature_tag is not terminated");
    if (h->proto_offset < FS_MSG_DATA_OFFSET || h->proto_offset > len || h->proto_len > len - h->proto_offset)
        FAIL("proto bytes [%llu, +%u) fall outside the message", (unsigned long long)h->proto_offset, h->proto_len);

    uint64_t starts[FS_MSG_MAX_TENSORS + 1], ends[FS_MSG_MAX_TENSORS + 1];
    for (uint32_t i = 0; i < h->tensor_count; i++) {
        const fs_tensor_desc *d = &m->tensors[i];
        if (memchr(d->name, 0, sizeof d->name) == NULL || d->name[0] == 0) FAIL("tensor %u name is empty or unterminated", i);
        uint32_t item = fs_dtype_size(d->dtype);
        if (item == 0) FAIL("tensor %s dtype %u is unknown", d->name, d->dtype);
        if (d->ndim > FS_MSG_MAX_DIMS) FAIL("tensor %s ndim %u exceeds %u", d->name, d->ndim, FS_MSG_MAX_DIMS);
        uint64_t count = 1;
        for (uint32_t k = 0; k < d->ndim; k++) {
            if (d->shape[k] < 0) FAIL("tensor %s shape[%u] is negative", d->name, k);
            if (d->shape[k] != 0 && count > UINT64_MAX / (uint64_t)d->shape[k]) FAIL("tensor %s shape overflows", d->name);
            count *= (uint64_t)d->shape[k];
        }
        if (count > UINT64_MAX / item || count * item != d->nbytes)
            FAIL("tensor %s nbytes %llu does not match its shape", d->name, (unsigned long long)d->nbytes);
        if (d->offset < FS_MSG_DATA_OFFSET || d->offset % FS_MSG_ALIGN != 0)
            FAIL("tensor %s offset %llu is misplaced", d->name, (unsigned long long)d->offset);
        if (d->offset > len || d->nbytes > len - d->offset)
            FAIL("tensor %s bytes [%llu, +%llu) fall outside the message", d->name,
                 (unsigned long long)d->offset, (unsigned long long)d->nbytes);
        for (uint32_t j = 0; j < i; j++)
            if (strncmp(m->tensors[j].name, d->name, sizeof d->name) == 0) FAIL("tensor %s appears twice", d->name);
        starts[i] = d->offset;
        ends[i] = d->offset + d->nbytes;
    }
    starts[h->tensor_count] = h->proto_offset;
    ends[h->tensor_count] = h->proto_offset + h->proto_len;
    for (uint32_t i = 0; i <= h->tensor_count; i++)
        for (uint32_t j = 0; j < i; j++)
            if (starts[i] < ends[j] && starts[j] < ends[i] && starts[i] != ends[i] && starts[j] != ends[j])
                FAIL("regions %u and %u of the message overlap", j, i);
    return 0;
}

int fs_msg_read(const uint8_t *area, uint64_t len, fs_msg_snapshot *out, char *err, size_t err_len) {
    if (len < FS_MSG_DATA_OFFSET) FAIL("message length %llu is shorter than its header", (unsigned long long)len);
    /* The one read of shared memory: a peer rewriting the slot from here on changes nothing we use.
     * A concurrent writer can tear this copy, which the checks below then see like any other garbage. */
    memcpy(out, area, sizeof *out);
    return fs_msg_check(out, len, err, err_len);
}

int fs_msg_validate(const uint8_t *area, uint64_t len, char *err, size_t err_len) {
    fs_msg_snapshot scratch;
    return fs_msg_read(area, len, &scratch, err, err_len);
}
