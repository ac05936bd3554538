/* fs_msg: the layout of one message inside a slot's request or response area.
 *
 *   [fs_msg_header 256 B][fs_tensor_desc x 8][tensor data at 64-byte aligned offsets ...][proto bytes]
 *
 * The scalars of the RPC travel in the header (method, request id, deadline, traceparent, feature
 * tag); the protobuf message without its tensors follows the tensors; each tensor is described by
 * (name, dtype, shape, offset, nbytes). The reader validates every field before anything is used.
 */
#ifndef FS_MSG_H
#define FS_MSG_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define FS_MSG_MAGIC 0x474d5346u /* "FSMG" */
#define FS_MSG_MAX_TENSORS 8u
#define FS_MSG_NAME_MAX 32u
#define FS_MSG_MAX_DIMS 4u
#define FS_MSG_ALIGN 64u
#define FS_MSG_TRACEPARENT_MAX 64u
#define FS_MSG_TAG_MAX 64u

/* dtype codes: the same numbers as feedserve.v1.DType */
enum fs_dtype { FS_F32 = 1, FS_F16 = 2, FS_I64 = 3, FS_I32 = 4, FS_I8 = 5, FS_U8 = 6 };

typedef struct fs_tensor_desc {
    char name[FS_MSG_NAME_MAX]; /* NUL-terminated */
    uint8_t dtype;
    uint8_t ndim;
    uint8_t reserved[6];
    int64_t shape[FS_MSG_MAX_DIMS];
    uint64_t offset; /* from the start of the area */
    uint64_t nbytes;
    uint8_t pad[8];
} fs_tensor_desc;

typedef struct fs_msg_header {
    uint32_t magic;
    uint16_t method;
    uint16_t tensor_count;
    uint32_t status; /* a gRPC status code; 0 is OK. Non-zero: the proto bytes are the UTF-8 message */
    uint32_t proto_len;
    uint64_t request_id;
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0: none */
    uint64_t proto_offset;
    uint64_t total_len;
    char traceparent[FS_MSG_TRACEPARENT_MAX]; /* NUL-terminated W3C traceparent, or empty */
    char feature_tag[FS_MSG_TAG_MAX];         /* NUL-terminated */
    uint8_t reserved[80];
} fs_msg_header;

#define FS_MSG_DATA_OFFSET (sizeof(fs_msg_header) + FS_MSG_MAX_TENSORS * sizeof(fs_tensor_desc))

static_assert(sizeof(fs_tensor_desc) == 96, "descriptor layout is part of the wire format");
static_assert(offsetof(fs_tensor_desc, shape) == 40, "shape is 8-byte aligned");
static_assert(sizeof(fs_msg_header) == 256, "header layout is part of the wire format");
static_assert(offsetof(fs_msg_header, request_id) == 16, "request id is 8-byte aligned");
static_assert(offsetof(fs_msg_header, traceparent) == 48, "strings follow the integers");
static_assert(FS_MSG_DATA_OFFSET % FS_MSG_ALIGN == 0, "tensor data starts aligned");

/* One private copy of a message's header and descriptors. Shared memory is read once, into this,
 * and only this copy is checked and used: a peer rewriting the slot afterwards changes nothing. */
typedef struct fs_msg_snapshot {
    fs_msg_header header;
    fs_tensor_desc tensors[FS_MSG_MAX_TENSORS];
} fs_msg_snapshot;

static_assert(sizeof(fs_msg_snapshot) == FS_MSG_DATA_OFFSET, "the snapshot is exactly the message's fixed part");

/* Bytes per element of a dtype code, 0 if unknown. */
uint32_t fs_dtype_size(uint8_t dtype);

/* Copy the fixed part of the message in `area` of `len` bytes (`len` <= the area's capacity, checked by
 * the caller) into `out` with one read, then validate that copy. Returns 0, or -EINVAL with a lowercase
 * reason naming the field in `err`. Reads nothing outside [0, len); on success every string in `out` is
 * terminated, tensor_count <= FS_MSG_MAX_TENSORS and every ndim <= FS_MSG_MAX_DIMS. */
int fs_msg_read(const uint8_t *area, uint64_t len, fs_msg_snapshot *out, char *err, size_t err_len);

/* fs_msg_read into a scratch snapshot: for writers checking their own output. */
int fs_msg_validate(const uint8_t *area, uint64_t len, char *err, size_t err_len);

#endif
