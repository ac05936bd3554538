/* fs_cuckoo: a bucketised cuckoo hash table mapping uint64 keys to rows of an embedding arena.
 *
 * Buckets are one cache line: 4 slots of (key, row). Each key has two candidate buckets (two
 * independent hashes, reduced to the bucket count by a multiply-high, so the table can be sized to
 * its load rather than to a power of two). Insertion displaces residents along a bounded random walk;
 * a key that still finds no place goes to a small stash, and a full stash grows the table.
 *
 * Rows live in one contiguous arena at the table's precision: float32, float16, or int8 with a
 * per-row scale. Each row records its last update (seconds) for expiry. Key 0 marks an empty slot
 * and is never stored.
 *
 * Concurrency: a pthread rwlock. Batch lookups share it; upserts, drifts, expiry and growth hold it
 * exclusively, so a reader never observes a half-written row or a half-grown table. Every batch is
 * one call that the binding makes with the GIL released.
 */
#ifndef FS_CUCKOO_H
#define FS_CUCKOO_H

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define FS_CUCKOO_SLOTS 4
#define FS_CUCKOO_STASH 64
#define FS_CUCKOO_MAX_KICKS 500
#define FS_CUCKOO_ADMIT_ROWS 4       /* frequency admission: a count-min sketch of new keys */
#define FS_CUCKOO_ADMIT_WIDTH 65536u

enum fs_precision { FS_PREC_F32 = 0, FS_PREC_F16 = 1, FS_PREC_I8 = 2 };

/* per-key outcomes of an upsert */
enum fs_upsert_status { FS_UPDATED = 0, FS_INSERTED = 1, FS_PENDING = 2 };

typedef struct fs_cuckoo_slot {
    uint64_t key;
    uint32_t row;
    uint32_t reserved;
} fs_cuckoo_slot;

typedef struct fs_cuckoo_bucket {
    fs_cuckoo_slot slots[FS_CUCKOO_SLOTS];
} fs_cuckoo_bucket;

static_assert(sizeof(fs_cuckoo_slot) == 16, "a slot is a key and a row index");
static_assert(sizeof(fs_cuckoo_bucket) == 64, "a bucket is one cache line");

typedef struct fs_cuckoo {
    pthread_rwlock_t lock;
    uint32_t dim;
    uint32_t precision;
    uint32_t row_bytes;     /* bytes of one row's values */
    uint64_t bucket_count;
    fs_cuckoo_bucket *buckets;
    fs_cuckoo_slot stash[FS_CUCKOO_STASH];
    uint32_t stash_used;
    uint64_t size;          /* keys stored */
    uint8_t *arena;         /* row values */
    float *scales;          /* int8 only */
    uint32_t *stamps;       /* last update, seconds */
    uint64_t rows_capacity;
    uint64_t rows_used;     /* high-water mark of the arena */
    uint32_t *free_rows;    /* rows released by expiry, reused first */
    uint64_t free_count, free_capacity;
    uint32_t admit_after;   /* a new key gets a row after this many upserts (1: at once) */
    uint16_t *admit;        /* count-min sketch: over-counts only, so no key waits past admit_after */
    uint64_t seed;
    uint64_t rng;
} fs_cuckoo;

int fs_cuckoo_init(fs_cuckoo *t, uint32_t dim, uint32_t precision, uint64_t expected, uint32_t admit_after);
void fs_cuckoo_free(fs_cuckoo *t);

/* out: n x dim float32; found: n bytes. ttl_s 0: no expiry. Returns hits. */
uint64_t fs_cuckoo_lookup(fs_cuckoo *t, const uint64_t *keys, uint64_t n, float *out, uint8_t *found,
                          uint32_t now_s, uint32_t ttl_s);
/* values: n x dim float32; status: n bytes (enum fs_upsert_status). admit 0 skips frequency admission
 * (restoring a snapshot). Returns 0, -EINVAL (a zero key; nothing changed) or -ENOMEM. */
int fs_cuckoo_upsert(fs_cuckoo *t, const uint64_t *keys, uint64_t n, const float *values, uint8_t *status,
                     uint32_t now_s, int admit);
/* u' = normalise(u + rate (target - u)); a missing user is created from target when rate > 0.
 * targets: n x dim; out (optional): n x dim moved vectors; status: 0 unchanged, 1 moved, 2 created.
 * commit 0 is a plan: out and status say what the move would be (before admission, before the row's precision)
 * and nothing changes, so a caller can judge the move (the guardrails) and then store exactly it. */
int fs_cuckoo_drift(fs_cuckoo *t, const uint64_t *keys, uint64_t n, const float *targets, const float *rates,
                    float *out, uint8_t *status, uint32_t now_s, int commit);
/* Remove keys not updated for ttl_s seconds; returns how many. */
uint64_t fs_cuckoo_expire(fs_cuckoo *t, uint32_t now_s, uint32_t ttl_s);
/* Remove keys (a forgotten user, a deleted item); removed[i] = 1 where the key was there. Returns count. */
uint64_t fs_cuckoo_remove(fs_cuckoo *t, const uint64_t *keys, uint64_t n, uint8_t *removed);
/* Bytes held: buckets, arena, scales, stamps, free list, admission counters. */
uint64_t fs_cuckoo_bytes(const fs_cuckoo *t);
/* Copy every key and its float32 row out (keys: size, rows: size x dim, stamps: size). Returns count. */
uint64_t fs_cuckoo_export(fs_cuckoo *t, uint64_t *keys, float *rows, uint32_t *stamps, uint64_t capacity);

#endif
