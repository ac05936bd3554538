/* fs_ring: a shared-memory request/response ring between one server process and many clients.
 *
 * Layout of one POSIX shm segment (owned by the server, mode 0600):
 *
 *   [fs_ring_header]                  layout; server pid and heartbeat; the server doorbell: one line each
 *   [fs_lane x lane_count]            one lane per attached client process: an SPSC ring of slot numbers
 *   [fs_slot + payload x lanes*slots] each slot: a 64-byte header, a request area, a response area
 *
 * Requests flow client -> server through the lane's ring (head written by the client, tail by the
 * server, each on its own cache line). Responses flow back in the same slot: the server writes the
 * response area and publishes it through the slot's state word, which is also the client's futex.
 *
 * Memory ordering (each side reads its own index relaxed, the other's with acquire, publishes with
 * release):
 *   - client: writes payload, entries[head % S], then head (release). The server's acquire load of
 *     head makes the payload and the entry visible.
 *   - server: reads entry, then tail (release) so the client may reuse the entry cell; moves the
 *     slot REQUEST->BUSY with an acq_rel CAS (a client abandoning the slot races on the same word).
 *   - server: writes the response, then state BUSY->DONE (release CAS). The client's acquire load
 *     of state makes the response visible.
 *   - doorbells (server bell, slot state, lane free bell) avoid lost wake-ups Dekker-style: the
 *     waker publishes, fences (seq_cst), then reads the sleeper count; the sleeper raises the count,
 *     fences, then re-checks the condition before FUTEX_WAIT, which itself re-checks the word.
 */
#ifndef FS_RING_H
#define FS_RING_H

#include <assert.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define FS_RING_MAGIC 0x47525346u /* "FSRG" */
#define FS_RING_VERSION 1u
#define FS_CACHE_LINE 64
#define FS_RING_MAX_LANES 64u
#define FS_RING_MAX_SLOTS_PER_LANE 64u
#define FS_RING_MAX_CAPACITY (256ull << 20) /* per area: 256 MiB */

enum fs_slot_state {
    FS_SLOT_FREE = 0,      /* owned by nobody: a client may claim it */
    FS_SLOT_CLAIMED = 1,   /* a client thread is writing a request */
    FS_SLOT_REQUEST = 2,   /* submitted; waiting for the server */
    FS_SLOT_BUSY = 3,      /* the server is computing the response */
    FS_SLOT_DONE = 4,      /* the response is ready for the client */
    FS_SLOT_ABANDONED = 5, /* the client gave up; whoever sees it next frees it */
};

typedef struct fs_ring_header {
    uint32_t magic;
    uint32_t version;
    uint32_t lane_count;
    uint32_t slots_per_lane;
    uint64_t request_capacity;  /* bytes of each slot's request area */
    uint64_t response_capacity; /* bytes of each slot's response area */
    uint64_t slot_stride;       /* bytes from one slot header to the next */
    uint64_t segment_size;
    uint64_t lanes_offset;
    uint64_t slots_offset;
    /* liveness, written by the server's heartbeat thread: its own line, away from the doorbell */
    alignas(FS_CACHE_LINE) int32_t server_pid;
    uint32_t reserved0;
    _Atomic uint64_t heartbeat_ns; /* CLOCK_MONOTONIC, refreshed by the server's heartbeat thread */
    _Atomic uint32_t closing;      /* set when the server shuts the ring down */
    /* the server doorbell: bumped on every submit; the server sleeps on it */
    alignas(FS_CACHE_LINE) _Atomic uint32_t bell;
    _Atomic uint32_t sleepers;
} fs_ring_header;

typedef struct fs_lane {
    alignas(FS_CACHE_LINE) _Atomic int32_t owner_pid; /* 0: free lane */
    _Atomic uint32_t free_bell;                      /* bumped whenever a slot of the lane becomes FREE */
    _Atomic uint32_t free_waiters;
    alignas(FS_CACHE_LINE) _Atomic uint64_t head; /* producer index: written by the client only */
    alignas(FS_CACHE_LINE) _Atomic uint64_t tail; /* consumer index: written by the server only */
    alignas(FS_CACHE_LINE) uint32_t entries[FS_RING_MAX_SLOTS_PER_LANE]; /* slot index per submission */
} fs_lane;

typedef struct fs_slot {
    _Atomic uint32_t state;   /* enum fs_slot_state; also the response futex */
    _Atomic uint32_t waiters; /* client threads parked on state */
    uint64_t request_len;     /* written by the client before submit */
    uint64_t response_len;    /* written by the server before DONE */
    uint8_t reserved[40];
} fs_slot;

static_assert(offsetof(fs_ring_header, server_pid) == FS_CACHE_LINE, "the immutable layout fills line 0");
static_assert(offsetof(fs_ring_header, bell) == 2 * FS_CACHE_LINE, "the doorbell sits on its own cache line");
static_assert(sizeof(fs_ring_header) == 3 * FS_CACHE_LINE, "header is three cache lines");
static_assert(offsetof(fs_lane, head) - offsetof(fs_lane, owner_pid) == FS_CACHE_LINE, "head is a cache line past the owner");
static_assert(offsetof(fs_lane, tail) - offsetof(fs_lane, head) == FS_CACHE_LINE, "head and tail must be a cache line apart");
static_assert(offsetof(fs_lane, entries) - offsetof(fs_lane, tail) == FS_CACHE_LINE, "entries start a line after tail");
static_assert(sizeof(fs_lane) % FS_CACHE_LINE == 0, "lanes tile cache lines");
static_assert(sizeof(fs_slot) == FS_CACHE_LINE, "a slot header is one cache line");
static_assert(sizeof(_Atomic uint32_t) == 4 && sizeof(_Atomic uint64_t) == 8, "futex words are 32-bit");

/* The layout as this process checked it: a private copy, so that a peer rewriting the shared header
 * after attach cannot move any offset this process computes. */
typedef struct fs_ring_layout {
    uint32_t lane_count;
    uint32_t slots_per_lane;
    uint64_t request_capacity;
    uint64_t response_capacity;
    uint64_t slot_stride;
    uint64_t segment_size;
    uint64_t lanes_offset;
    uint64_t slots_offset;
} fs_ring_layout;

typedef struct fs_ring {
    fs_ring_header *hdr;   /* shared: only the atomics (heartbeat, closing, bell) are read after attach */
    fs_ring_layout layout; /* private: every offset is computed from this */
    uint8_t *base;
    uint64_t size;
    int is_server;
    int lane;               /* client: the lane this process owns; server: -1 */
    uint32_t next_lane;     /* server: round-robin cursor */
    pthread_mutex_t submit_lock; /* client: serialises producers of this process on its lane */
    pthread_mutex_t consume_lock; /* server: serialises its dispatcher threads over the lanes' tails */
    pthread_t heartbeat;
    int heartbeat_running;
    int detached;
    char name[256];
} fs_ring;

/* Errors are negative errno values: -ETIMEDOUT (deadline), -EPIPE (peer dead or ring closing),
 * -EBUSY (no free lane), -EINVAL (bad argument or layout), -EPROTO (corrupt shared state). */

int fs_ring_create(fs_ring *r, const char *name, uint32_t lanes, uint32_t slots_per_lane,
                   uint64_t request_capacity, uint64_t response_capacity);
int fs_ring_attach(fs_ring *r, const char *name);
void fs_ring_close(fs_ring *r);    /* fs_ring_detach then fs_ring_unmap */
void fs_ring_detach(fs_ring *r);   /* server: mark closing, wake everyone, stop the heartbeat, unlink;
                                      client: hand the lane back if idle. The mapping stays valid. */
void fs_ring_unmap(fs_ring *r);

int64_t fs_ring_now_ns(void);
uint32_t fs_ring_slot_count(const fs_ring *r);
uint8_t *fs_ring_request_area(const fs_ring *r, uint32_t slot);
uint8_t *fs_ring_response_area(const fs_ring *r, uint32_t slot);
fs_slot *fs_ring_slot(const fs_ring *r, uint32_t slot);

/* client */
int fs_ring_claim(fs_ring *r, int64_t deadline_ns, uint32_t *slot);
int fs_ring_submit(fs_ring *r, uint32_t slot, uint64_t request_len);
int fs_ring_wait(fs_ring *r, uint32_t slot, int64_t deadline_ns, int64_t spin_ns, int64_t stale_ns,
                 uint64_t *response_len);
int fs_ring_release(fs_ring *r, uint32_t slot); /* -EINVAL: not a slot of our lane, or not ours to free */
int fs_ring_server_alive(const fs_ring *r, int64_t stale_ns);

/* server */
int fs_ring_next(fs_ring *r, int64_t deadline_ns, int64_t spin_ns, uint32_t *slot, uint64_t *request_len);
int fs_ring_complete(fs_ring *r, uint32_t slot, uint64_t response_len);
int fs_ring_reap(fs_ring *r); /* under the consume lock; a slot a dispatcher holds is marked abandoned, never freed */

/* The attacher's check of a shared header against the mapped size; fills `out` from one private copy. */
int fs_ring_check_layout(const fs_ring_header *shared, uint64_t mapped, fs_ring_layout *out);

#endif
