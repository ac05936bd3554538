/* fs_ring: implementation. See fs_ring.h for the layout and the memory-ordering argument. */
#define _GNU_SOURCE
#include "fs_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FS_SLEEP_SLICE_NS 2000000LL       /* a parked waiter re-checks liveness this often */
#define FS_HEARTBEAT_PERIOD_NS 50000000LL /* the server's heartbeat thread ticks this often */

/* One step of a spin-wait. Yield the CPU rather than only pausing: when the peer we wait for was
 * scheduled on our core (common on 2 cores), a pure busy-wait would burn our whole spin window
 * before the peer could run. On an otherwise idle core sched_yield returns at once. */
static inline void fs_spin_step(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
    sched_yield();
}

int64_t fs_ring_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Shared (not PRIVATE) futexes: the word lives in memory mapped by several processes. */
static int fs_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    if (timeout_ns <= 0) return -ETIMEDOUT;
    struct timespec ts = {.tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL};
    long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, &ts, NULL, 0);
    return rc == 0 ? 0 : -errno;
}

static void fs_futex_wake(_Atomic uint32_t *word, int count) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, count, NULL, NULL, 0);
}

static inline uint64_t fs_align(uint64_t value, uint64_t to) { return (value + to - 1) / to * to; }

static inline fs_lane *fs_lane_at(const fs_ring *r, uint32_t lane) {
    assert(lane < r->layout.lane_count && "lane index out of range"); /* debug builds: callers check first */
    return (fs_lane *)(r->base + r->layout.lanes_offset + (uint64_t)lane * sizeof(fs_lane));
}

uint32_t fs_ring_slot_count(const fs_ring *r) { return r->layout.lane_count * r->layout.slots_per_lane; }

fs_slot *fs_ring_slot(const fs_ring *r, uint32_t slot) {
    assert(slot < fs_ring_slot_count(r) && "slot index out of range");
    return (fs_slot *)(r->base + r->layout.slots_offset + (uint64_t)slot * r->layout.slot_stride);
}

uint8_t *fs_ring_request_area(const fs_ring *r, uint32_t slot) {
    return (uint8_t *)fs_ring_slot(r, slot) + sizeof(fs_slot);
}

uint8_t *fs_ring_response_area(const fs_ring *r, uint32_t slot) {
    return fs_ring_request_area(r, slot) + fs_align(r->layout.request_capacity, FS_CACHE_LINE);
}

static int fs_pid_alive(int32_t pid) {
    if (pid <= 0) return 0;
    return kill(pid, 0) == 0 || errno == EPERM;
}

static void *fs_heartbeat_main(void *arg) {
    fs_ring *r = arg;
    while (!atomic_load_explicit(&r->hdr->closing, memory_order_acquire)) {
        atomic_store_explicit(&r->hdr->heartbeat_ns, (uint64_t)fs_ring_now_ns(), memory_order_release);
        /* sleeps on `closing` so that close() ends the thread at once */
        fs_futex_wait(&r->hdr->closing, 0, FS_HEARTBEAT_PERIOD_NS);
    }
    return NULL;
}

int fs_ring_create(fs_ring *r, const char *name, uint32_t lanes, uint32_t slots_per_lane,
                   uint64_t request_capacity, uint64_t response_capacity) {
    memset(r, 0, sizeof *r);
    r->lane = -1;
    if (lanes == 0 || lanes > FS_RING_MAX_LANES) return -EINVAL;
    if (slots_per_lane == 0 || slots_per_lane > FS_RING_MAX_SLOTS_PER_LANE) return -EINVAL;
    if (request_capacity == 0 || request_capacity > FS_RING_MAX_CAPACITY) return -EINVAL;
    if (response_capacity == 0 || response_capacity > FS_RING_MAX_CAPACITY) return -EINVAL;
    if (strlen(name) >= sizeof r->name || name[0] != '/') return -EINVAL;

    uint64_t lanes_offset = sizeof(fs_ring_header);
    uint64_t slots_offset = fs_align(lanes_offset + (uint64_t)lanes * sizeof(fs_lane), 4096);
    uint64_t stride = sizeof(fs_slot) + fs_align(request_capacity, FS_CACHE_LINE) +
                      fs_align(response_capacity, FS_CACHE_LINE);
    uint64_t size = slots_offset + (uint64_t)lanes * slots_per_lane * stride;

    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int err = errno;
        close(fd);
        shm_unlink(name);
        return -err;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (base == MAP_FAILED) {
        shm_unlink(name);
        return -err;
    }
    r->base = base;
    r->hdr = base;
    r->size = size;
    r->is_server = 1;
    strcpy(r->name, name);
    /* ftruncate zero-filled the segment: every lane is free, every slot FREE. */
    fs_ring_header *h = r->hdr;
    h->version = FS_RING_VERSION;
    h->lane_count = lanes;
    h->slots_per_lane = slots_per_lane;
    h->request_capacity = request_capacity;
    h->response_capacity = response_capacity;
    h->slot_stride = stride;
    h->segment_size = size;
    h->lanes_offset = lanes_offset;
    h->slots_offset = slots_offset;
    h->server_pid = getpid();
    r->layout = (fs_ring_layout){
        .lane_count = lanes,
        .slots_per_lane = slots_per_lane,
        .request_capacity = request_capacity,
        .response_capacity = response_capacity,
        .slot_stride = stride,
        .segment_size = size,
        .lanes_offset = lanes_offset,
        .slots_offset = slots_offset,
    };
    atomic_store_explicit(&h->heartbeat_ns, (uint64_t)fs_ring_now_ns(), memory_order_relaxed);
    /* magic last, with release: an attacher that sees it sees a complete header */
    atomic_store_explicit((_Atomic uint32_t *)&h->magic, FS_RING_MAGIC, memory_order_release);
    pthread_mutex_init(&r->consume_lock, NULL);
    if (pthread_create(&r->heartbeat, NULL, fs_heartbeat_main, r) != 0) {
        munmap(base, size);
        shm_unlink(name);
        return -EAGAIN;
    }
    r->heartbeat_running = 1;
    return 0;
}

/* The attacher trusts nothing in the header. It reads it once into a private copy (a hostile or broken
 * server may rewrite it at any time), checks that copy with overflow-safe arithmetic, and keeps it. */
int fs_ring_check_layout(const fs_ring_header *shared, uint64_t mapped, fs_ring_layout *out) {
    if (atomic_load_explicit((_Atomic uint32_t *)&shared->magic, memory_order_acquire) != FS_RING_MAGIC) return -EPROTO;
    fs_ring_header h;
    memcpy(&h, shared, offsetof(fs_ring_header, server_pid)); /* the immutable line, after the magic's acquire */
    if (h.version != FS_RING_VERSION) return -EPROTO;
    if (h.lane_count == 0 || h.lane_count > FS_RING_MAX_LANES) return -EPROTO;
    if (h.slots_per_lane == 0 || h.slots_per_lane > FS_RING_MAX_SLOTS_PER_LANE) return -EPROTO;
    if (h.request_capacity == 0 || h.request_capacity > FS_RING_MAX_CAPACITY) return -EPROTO;
    if (h.response_capacity == 0 || h.response_capacity > FS_RING_MAX_CAPACITY) return -EPROTO;
    /* bounded above: capacities <= 256 MiB, so the stride cannot overflow */
    uint64_t stride = sizeof(fs_slot) + fs_align(h.request_capacity, FS_CACHE_LINE) +
                      fs_align(h.response_capacity, FS_CACHE_LINE);
    if (h.slot_stride != stride || h.segment_size != mapped) return -EPROTO;
    if (h.lanes_offset != sizeof(fs_ring_header)) return -EPROTO;
    uint64_t lanes_end = h.lanes_offset + (uint64_t)h.lane_count * sizeof(fs_lane); /* small: <= 64 lanes */
    uint64_t slots_bytes, end;
    if (__builtin_mul_overflow((uint64_t)h.lane_count * h.slots_per_lane, stride, &slots_bytes)) return -EPROTO;
    if (h.slots_offset < lanes_end || h.slots_offset > mapped) return -EPROTO;
    if (__builtin_add_overflow(h.slots_offset, slots_bytes, &end) || end != mapped) return -EPROTO;
    *out = (fs_ring_layout){
        .lane_count = h.lane_count,
        .slots_per_lane = h.slots_per_lane,
        .request_capacity = h.request_capacity,
        .response_capacity = h.response_capacity,
        .slot_stride = stride,
        .segment_size = mapped,
        .lanes_offset = h.lanes_offset,
        .slots_offset = h.slots_offset,
    };
    return 0;
}

int fs_ring_attach(fs_ring *r, const char *name) {
    memset(r, 0, sizeof *r);
    r->lane = -1;
    if (strlen(name) >= sizeof r->name) return -EINVAL;
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(fs_ring_header)) {
        close(fd);
        return -EPROTO;
    }
    uint64_t size = (uint64_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (base == MAP_FAILED) return -err;
    r->base = base;
    r->hdr = base;
    r->size = size;
    strcpy(r->name, name);
    int rc = fs_ring_check_layout(r->hdr, size, &r->layout);
    if (rc == 0 && atomic_load_explicit(&r->hdr->closing, memory_order_acquire)) rc = -EPIPE;
    if (rc == 0 && !fs_pid_alive(r->hdr->server_pid)) rc = -EPIPE;
    if (rc != 0) {
        munmap(base, size);
        memset(r, 0, sizeof *r);
        return rc;
    }
    int32_t me = getpid();
    for (uint32_t i = 0; i < r->layout.lane_count; i++) {
        int32_t expected = 0;
        if (atomic_compare_exchange_strong_explicit(&fs_lane_at(r, i)->owner_pid, &expected, me,
                                                    memory_order_acq_rel, memory_order_relaxed)) {
            r->lane = (int)i;
            break;
        }
    }
    if (r->lane < 0) {
        munmap(base, size);
        memset(r, 0, sizeof *r);
        return -EBUSY;
    }
    pthread_mutex_init(&r->submit_lock, NULL);
    return 0;
}

void fs_ring_close(fs_ring *r) {
    fs_ring_detach(r);
    fs_ring_unmap(r);
}

void fs_ring_unmap(fs_ring *r) {
    if (r->base == NULL) return;
    munmap(r->base, r->size);
    r->base = NULL;
    r->hdr = NULL;
}

void fs_ring_detach(fs_ring *r) {
    if (r->base == NULL || r->detached) return;
    r->detached = 1;
    if (r->is_server) {
        atomic_store_explicit(&r->hdr->closing, 1, memory_order_release);
        fs_futex_wake(&r->hdr->closing, INT_MAX);
        /* wake every parked client so that it sees `closing` and fails over */
        for (uint32_t s = 0; s < fs_ring_slot_count(r); s++) fs_futex_wake(&fs_ring_slot(r, s)->state, INT_MAX);
        if (r->heartbeat_running) pthread_join(r->heartbeat, NULL);
        shm_unlink(r->name);
    } else {
        /* Hand the lane back only if nothing of ours is in flight; else the server reaps it after we exit. */
        fs_lane *lane = fs_lane_at(r, (uint32_t)r->lane);
        int idle = atomic_load_explicit(&lane->head, memory_order_relaxed) ==
                   atomic_load_explicit(&lane->tail, memory_order_acquire);
        uint32_t first = (uint32_t)r->lane * r->layout.slots_per_lane;
        for (uint32_t i = 0; idle && i < r->layout.slots_per_lane; i++)
            idle = atomic_load_explicit(&fs_ring_slot(r, first + i)->state, memory_order_acquire) == FS_SLOT_FREE;
        if (idle) atomic_store_explicit(&lane->owner_pid, 0, memory_order_release);
        pthread_mutex_destroy(&r->submit_lock);
    }
}

int fs_ring_server_alive(const fs_ring *r, int64_t stale_ns) {
    if (atomic_load_explicit(&r->hdr->closing, memory_order_acquire)) return 0;
    if (!fs_pid_alive(r->hdr->server_pid)) return 0;
    int64_t beat = (int64_t)atomic_load_explicit(&r->hdr->heartbeat_ns, memory_order_acquire);
    return stale_ns <= 0 || fs_ring_now_ns() - beat < stale_ns;
}

static void fs_slot_freed(fs_ring *r, uint32_t slot) {
    fs_lane *lane = fs_lane_at(r, slot / r->layout.slots_per_lane);
    atomic_fetch_add_explicit(&lane->free_bell, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&lane->free_waiters, memory_order_relaxed)) fs_futex_wake(&lane->free_bell, 1);
}

int fs_ring_claim(fs_ring *r, int64_t deadline_ns, uint32_t *slot) {
    if (r->lane < 0) return -EINVAL;
    fs_lane *lane = fs_lane_at(r, (uint32_t)r->lane);
    uint32_t first = (uint32_t)r->lane * r->layout.slots_per_lane;
    for (;;) {
        uint32_t bell = atomic_load_explicit(&lane->free_bell, memory_order_acquire);
        for (uint32_t i = 0; i < r->layout.slots_per_lane; i++) {
            uint32_t expected = FS_SLOT_FREE;
            if (atomic_compare_exchange_strong_explicit(&fs_ring_slot(r, first + i)->state, &expected,
                                                        FS_SLOT_CLAIMED, memory_order_acquire,
                                                        memory_order_relaxed)) {
                *slot = first + i;
                return 0;
            }
        }
        /* Every slot is in flight: backpressure. Park until one is freed or the deadline passes. */
        int64_t left = deadline_ns - fs_ring_now_ns();
        if (left <= 0) return -ETIMEDOUT;
        if (!fs_ring_server_alive(r, 0)) return -EPIPE;
        atomic_fetch_add_explicit(&lane->free_waiters, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        fs_futex_wait(&lane->free_bell, bell, left < FS_SLEEP_SLICE_NS ? left : FS_SLEEP_SLICE_NS);
        atomic_fetch_sub_explicit(&lane->free_waiters, 1, memory_order_relaxed);
    }
}

int fs_ring_submit(fs_ring *r, uint32_t slot, uint64_t request_len) {
    uint32_t per = r->layout.slots_per_lane;
    if (r->lane < 0 || slot / per != (uint32_t)r->lane) return -EINVAL;
    if (request_len > r->layout.request_capacity) return -EINVAL;
    fs_slot *s = fs_ring_slot(r, slot);
    if (atomic_load_explicit(&s->state, memory_order_relaxed) != FS_SLOT_CLAIMED) return -EINVAL;
    fs_lane *lane = fs_lane_at(r, (uint32_t)r->lane);
    s->request_len = request_len;
    atomic_store_explicit(&s->state, FS_SLOT_REQUEST, memory_order_relaxed);

    pthread_mutex_lock(&r->submit_lock);
    uint64_t head = atomic_load_explicit(&lane->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&lane->tail, memory_order_acquire);
    if (head - tail >= per) { /* cannot happen with one entry per claimed slot; refuse rather than overwrite */
        pthread_mutex_unlock(&r->submit_lock);
        atomic_store_explicit(&s->state, FS_SLOT_CLAIMED, memory_order_relaxed);
        return -EPROTO;
    }
    assert(head - tail < per && "the lane never holds more entries than slots");
    lane->entries[head % per] = slot % per;
    atomic_store_explicit(&lane->head, head + 1, memory_order_release); /* publishes entry + payload */
    pthread_mutex_unlock(&r->submit_lock);

    atomic_fetch_add_explicit(&r->hdr->bell, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->hdr->sleepers, memory_order_relaxed)) fs_futex_wake(&r->hdr->bell, 1);
    return 0;
}

/* Give up on a submitted slot. Returns 1 if the response arrived after all (state DONE). */
static int fs_abandon(fs_ring *r, uint32_t slot) {
    fs_slot *s = fs_ring_slot(r, slot);
    uint32_t state = atomic_load_explicit(&s->state, memory_order_acquire);
    while (state == FS_SLOT_REQUEST || state == FS_SLOT_BUSY) {
        if (atomic_compare_exchange_weak_explicit(&s->state, &state, FS_SLOT_ABANDONED, memory_order_acq_rel,
                                                  memory_order_acquire))
            return 0;
    }
    return state == FS_SLOT_DONE;
}

int fs_ring_wait(fs_ring *r, uint32_t slot, int64_t deadline_ns, int64_t spin_ns, int64_t stale_ns,
                 uint64_t *response_len) {
    fs_slot *s = fs_ring_slot(r, slot);
    int64_t now = fs_ring_now_ns();
    int64_t spin_until = now + spin_ns;
    for (;;) {
        uint32_t state = atomic_load_explicit(&s->state, memory_order_acquire);
        if (state == FS_SLOT_DONE) break;
        if (state != FS_SLOT_REQUEST && state != FS_SLOT_BUSY) return -EPROTO;
        now = fs_ring_now_ns();
        if (now >= deadline_ns) {
            if (fs_abandon(r, slot)) break;
            return -ETIMEDOUT;
        }
        if (now < spin_until) {
            fs_spin_step();
            continue;
        }
        if (!fs_ring_server_alive(r, stale_ns)) {
            if (fs_abandon(r, slot)) break;
            return -EPIPE;
        }
        int64_t left = deadline_ns - now;
        atomic_fetch_add_explicit(&s->waiters, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&s->state, memory_order_acquire) == state)
            fs_futex_wait(&s->state, state, left < FS_SLEEP_SLICE_NS ? left : FS_SLEEP_SLICE_NS);
        atomic_fetch_sub_explicit(&s->waiters, 1, memory_order_relaxed);
    }
    uint64_t len = s->response_len;
    if (len > r->layout.response_capacity) return -EPROTO; /* a hostile or broken server */
    *response_len = len;
    return 0;
}

int fs_ring_release(fs_ring *r, uint32_t slot) {
    /* Only the lane's owner frees its slots, and only one it holds: CLAIMED (never submitted) or DONE
     * (the response was read). Anything else belongs to the server or to another process. */
    if (r->lane < 0 || slot >= fs_ring_slot_count(r) || slot / r->layout.slots_per_lane != (uint32_t)r->lane)
        return -EINVAL;
    fs_slot *s = fs_ring_slot(r, slot);
    uint32_t state = atomic_load_explicit(&s->state, memory_order_acquire);
    if (state != FS_SLOT_CLAIMED && state != FS_SLOT_DONE) return -EINVAL;
    /* We hold the slot in either state: nobody else moves it, so a plain store suffices. */
    atomic_store_explicit(&s->state, FS_SLOT_FREE, memory_order_release);
    fs_slot_freed(r, slot);
    return 0;
}

static int fs_poll_locked(fs_ring *r, uint32_t *slot, uint64_t *request_len);

/* One pass over the lanes. Each lane is single-consumer, so dispatcher threads take turns. */
static int fs_poll(fs_ring *r, uint32_t *slot, uint64_t *request_len) {
    pthread_mutex_lock(&r->consume_lock);
    int got = fs_poll_locked(r, slot, request_len);
    pthread_mutex_unlock(&r->consume_lock);
    return got;
}

/* One pass over the lanes from the round-robin cursor. 1: got a slot; 0: nothing to do. */
static int fs_poll_locked(fs_ring *r, uint32_t *slot, uint64_t *request_len) {
    uint32_t lanes = r->layout.lane_count, per = r->layout.slots_per_lane;
    for (uint32_t n = 0; n < lanes; n++) {
        uint32_t li = (r->next_lane + n) % lanes;
        fs_lane *lane = fs_lane_at(r, li);
        uint64_t tail = atomic_load_explicit(&lane->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&lane->head, memory_order_acquire);
        while (head != tail) {
            if (head - tail > per) { /* a corrupt producer index: drop the lane's backlog */
                atomic_store_explicit(&lane->tail, head, memory_order_release);
                break;
            }
            uint32_t index = lane->entries[tail % per];
            atomic_store_explicit(&lane->tail, ++tail, memory_order_release);
            if (index >= per) continue; /* a corrupt entry names no slot of this lane */
            uint32_t id = li * per + index;
            fs_slot *s = fs_ring_slot(r, id);
            uint32_t expected = FS_SLOT_REQUEST;
            if (atomic_compare_exchange_strong_explicit(&s->state, &expected, FS_SLOT_BUSY, memory_order_acq_rel,
                                                        memory_order_acquire)) {
                r->next_lane = li + 1;
                *slot = id;
                *request_len = s->request_len;
                return 1;
            }
            if (expected == FS_SLOT_ABANDONED) {
                atomic_store_explicit(&s->state, FS_SLOT_FREE, memory_order_release);
                fs_slot_freed(r, id);
            }
        }
    }
    return 0;
}

int fs_ring_next(fs_ring *r, int64_t deadline_ns, int64_t spin_ns, uint32_t *slot, uint64_t *request_len) {
    int64_t spin_until = fs_ring_now_ns() + spin_ns;
    for (;;) {
        if (atomic_load_explicit(&r->hdr->closing, memory_order_acquire)) return -EPIPE;
        uint32_t bell = atomic_load_explicit(&r->hdr->bell, memory_order_acquire);
        if (fs_poll(r, slot, request_len)) return 0;
        int64_t now = fs_ring_now_ns();
        if (now >= deadline_ns) return -ETIMEDOUT;
        if (now < spin_until) {
            fs_spin_step();
            continue;
        }
        atomic_fetch_add_explicit(&r->hdr->sleepers, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (fs_poll(r, slot, request_len)) {
            atomic_fetch_sub_explicit(&r->hdr->sleepers, 1, memory_order_relaxed);
            return 0;
        }
        int64_t left = deadline_ns - now;
        fs_futex_wait(&r->hdr->bell, bell, left);
        atomic_fetch_sub_explicit(&r->hdr->sleepers, 1, memory_order_relaxed);
    }
}

int fs_ring_complete(fs_ring *r, uint32_t slot, uint64_t response_len) {
    if (slot >= fs_ring_slot_count(r) || response_len > r->layout.response_capacity) return -EINVAL;
    fs_slot *s = fs_ring_slot(r, slot);
    s->response_len = response_len;
    uint32_t expected = FS_SLOT_BUSY;
    if (!atomic_compare_exchange_strong_explicit(&s->state, &expected, FS_SLOT_DONE, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        if (expected == FS_SLOT_ABANDONED) { /* the client left: nobody will read this response */
            atomic_store_explicit(&s->state, FS_SLOT_FREE, memory_order_release);
            fs_slot_freed(r, slot);
            return -ETIMEDOUT;
        }
        return -EPROTO;
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->waiters, memory_order_relaxed)) fs_futex_wake(&s->state, INT_MAX);
    return 0;
}

int fs_ring_reap(fs_ring *r) {
    /* Under the consume lock: no dispatcher is between taking a lane's entry and claiming its slot. */
    pthread_mutex_lock(&r->consume_lock);
    int reaped = 0;
    uint32_t per = r->layout.slots_per_lane;
    for (uint32_t li = 0; li < r->layout.lane_count; li++) {
        fs_lane *lane = fs_lane_at(r, li);
        int32_t owner = atomic_load_explicit(&lane->owner_pid, memory_order_acquire);
        if (owner == 0 || fs_pid_alive(owner)) continue;
        /* The owner is gone: nobody else writes this lane's head or claims its slots. */
        atomic_store_explicit(&lane->tail, atomic_load_explicit(&lane->head, memory_order_acquire),
                              memory_order_release);
        for (uint32_t i = 0; i < per; i++) {
            fs_slot *s = fs_ring_slot(r, li * per + i);
            uint32_t state = atomic_load_explicit(&s->state, memory_order_acquire);
            /* A BUSY slot is held by a dispatcher that will complete() it: abandon it on the dead
             * client's behalf, so that complete() frees it. Every other state is the dead client's. */
            while (state == FS_SLOT_BUSY &&
                   !atomic_compare_exchange_weak_explicit(&s->state, &state, FS_SLOT_ABANDONED, memory_order_acq_rel,
                                                          memory_order_acquire)) {
            }
            if (state != FS_SLOT_BUSY) atomic_store_explicit(&s->state, FS_SLOT_FREE, memory_order_release);
            atomic_store_explicit(&s->waiters, 0, memory_order_relaxed);
        }
        atomic_store_explicit(&lane->owner_pid, 0, memory_order_release);
        reaped++;
    }
    pthread_mutex_unlock(&r->consume_lock);
    return reaped;
}
