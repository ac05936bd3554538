/* fs_cuckoo: implementation. See fs_cuckoo.h for the layout and the locking rule. */
#define _GNU_SOURCE
#include "fs_cuckoo.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Large regions (buckets, arena) come from mmap with transparent huge pages requested: a batch of
 * random lookups touches thousands of pages, and 4 KiB pages would add a TLB miss to most of them. */
static void *fs_big_alloc(uint64_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: without THP the table still works */
    return p;
}

static void *fs_big_realloc(void *p, uint64_t old_bytes, uint64_t new_bytes) {
    if (p == NULL) return fs_big_alloc(new_bytes);
    void *q = mremap(p, old_bytes, new_bytes, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) return NULL;
    madvise(q, new_bytes, MADV_HUGEPAGE);
    return q;
}

static void fs_big_free(void *p, uint64_t bytes) {
    if (p) munmap(p, bytes);
}

static inline uint64_t fs_mix(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t fs_range(uint64_t hash, uint64_t n) { /* Lemire's multiply-high reduction */
    return (uint64_t)(((unsigned __int128)hash * n) >> 64);
}

static inline uint64_t fs_b1(const fs_cuckoo *t, uint64_t key) { return fs_range(fs_mix(key ^ t->seed), t->bucket_count); }
static inline uint64_t fs_b2(const fs_cuckoo *t, uint64_t key) {
    return fs_range(fs_mix(key ^ (t->seed * 0x9e3779b97f4a7c15ULL + 1)), t->bucket_count);
}

static inline uint64_t fs_next_random(fs_cuckoo *t) {
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return t->rng;
}

/* float <-> IEEE half, round to nearest even; enough for embeddings (no NaN payloads kept) */
static uint16_t fs_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

static float fs_from_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else {
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            x = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        x = sign | 0x7f800000 | (mant << 13);
    } else {
        x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void fs_row_store(fs_cuckoo *t, uint32_t row, const float *v) {
    uint8_t *dst = t->arena + (uint64_t)row * t->row_bytes;
    if (t->precision == FS_PREC_F32) {
        memcpy(dst, v, t->row_bytes);
    } else if (t->precision == FS_PREC_F16) {
        uint16_t *h = (uint16_t *)dst;
        for (uint32_t i = 0; i < t->dim; i++) h[i] = fs_to_half(v[i]);
    } else {
        float peak = 0;
        for (uint32_t i = 0; i < t->dim; i++) peak = fmaxf(peak, fabsf(v[i]));
        float scale = peak > 0 ? peak / 127.0f : 1.0f;
        int8_t *q = (int8_t *)dst;
        for (uint32_t i = 0; i < t->dim; i++) q[i] = (int8_t)lrintf(v[i] / scale);
        t->scales[row] = scale;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
/* Hardware half->float (F16C), chosen at run time so that the build stays portable. */
__attribute__((target("f16c,avx"))) static void fs_halves_f16c(const uint16_t *h, float *out, uint32_t n) {
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) out[i] = fs_from_half(h[i]);
}
#endif

static void fs_halves(const uint16_t *h, float *out, uint32_t n) {
#if defined(__x86_64__)
    static int f16c = -1;
    if (f16c < 0) f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    if (f16c) {
        fs_halves_f16c(h, out, n);
        return;
    }
#endif
    for (uint32_t i = 0; i < n; i++) out[i] = fs_from_half(h[i]);
}

static void fs_row_load(const fs_cuckoo *t, uint32_t row, float *out) {
    const uint8_t *src = t->arena + (uint64_t)row * t->row_bytes;
    if (t->precision == FS_PREC_F32) {
        memcpy(out, src, t->row_bytes);
    } else if (t->precision == FS_PREC_F16) {
        fs_halves((const uint16_t *)src, out, t->dim);
    } else {
        const int8_t *q = (const int8_t *)src;
        float scale = t->scales[row];
        for (uint32_t i = 0; i < t->dim; i++) out[i] = q[i] * scale;
    }
}

static fs_cuckoo_slot *fs_find(fs_cuckoo *t, uint64_t key) {
    fs_cuckoo_bucket *a = &t->buckets[fs_b1(t, key)], *b = &t->buckets[fs_b2(t, key)];
    for (int i = 0; i < FS_CUCKOO_SLOTS; i++) {
        if (a->slots[i].key == key) return &a->slots[i];
        if (b->slots[i].key == key) return &b->slots[i];
    }
    for (uint32_t i = 0; i < t->stash_used; i++)
        if (t->stash[i].key == key) return &t->stash[i];
    return NULL;
}

static int fs_alloc_buckets(fs_cuckoo *t, uint64_t count) {
    fs_cuckoo_bucket *buckets = fs_big_alloc(count * sizeof *buckets); /* page-aligned and zero-filled */
    if (buckets == NULL) return -ENOMEM;
    t->buckets = buckets;
    t->bucket_count = count;
    return 0;
}

/* Place (key,row) by cuckoo displacement. 0: placed; -1: the walk ended with an evicted entry in *spill. */
static int fs_place(fs_cuckoo *t, uint64_t key, uint32_t row, fs_cuckoo_slot *spill) {
    fs_cuckoo_slot item = {.key = key, .row = row};
    uint64_t bucket = fs_b1(t, key);
    for (int kick = 0; kick <= FS_CUCKOO_MAX_KICKS; kick++) {
        uint64_t alt[2] = {fs_b1(t, item.key), fs_b2(t, item.key)};
        for (int c = 0; c < 2; c++) {
            fs_cuckoo_bucket *bk = &t->buckets[alt[c]];
            for (int i = 0; i < FS_CUCKOO_SLOTS; i++) {
                if (bk->slots[i].key == 0) {
                    bk->slots[i] = item;
                    return 0;
                }
            }
        }
        /* both buckets full: evict a random resident of one of them and carry it on */
        bucket = alt[fs_next_random(t) & 1];
        int victim = (int)(fs_next_random(t) % FS_CUCKOO_SLOTS);
        fs_cuckoo_slot evicted = t->buckets[bucket].slots[victim];
        t->buckets[bucket].slots[victim] = item;
        item = evicted;
    }
    *spill = item;
    return -1;
}

static int fs_grow(fs_cuckoo *t);

static int fs_insert(fs_cuckoo *t, uint64_t key, uint32_t row) {
    fs_cuckoo_slot spill;
    if (fs_place(t, key, row, &spill) == 0) return 0;
    if (t->stash_used < FS_CUCKOO_STASH) {
        t->stash[t->stash_used++] = spill;
        return 0;
    }
    int rc = fs_grow(t);
    if (rc != 0) return rc;
    return fs_insert(t, spill.key, spill.row);
}

static int fs_grow(fs_cuckoo *t) {
    fs_cuckoo_bucket *old = t->buckets;
    uint64_t old_count = t->bucket_count, old_count_at_start = old_count;
    fs_cuckoo_slot stash[FS_CUCKOO_STASH];
    uint32_t stash_used = t->stash_used;
    memcpy(stash, t->stash, sizeof stash);
    for (int attempt = 0; attempt < 8; attempt++) {
        if (fs_alloc_buckets(t, old_count + old_count / 2 + 1) != 0) {
            t->buckets = old;
            t->bucket_count = old_count;
            return -ENOMEM;
        }
        t->stash_used = 0;
        t->seed = fs_mix(t->seed + 0x632be59bd9b4e019ULL);
        int ok = 1;
        for (uint64_t b = 0; ok && b < old_count; b++)
            for (int i = 0; ok && i < FS_CUCKOO_SLOTS; i++)
                if (old[b].slots[i].key && fs_insert(t, old[b].slots[i].key, old[b].slots[i].row) != 0) ok = 0;
        for (uint32_t i = 0; ok && i < stash_used; i++)
            if (fs_insert(t, stash[i].key, stash[i].row) != 0) ok = 0;
        if (ok) {
            fs_big_free(old, old_count_at_start * sizeof *old);
            return 0;
        }
        fs_big_free(t->buckets, t->bucket_count * sizeof *t->buckets);
        old_count = old_count + old_count / 2 + 1; /* try larger still */
    }
    return -ENOMEM;
}

static int fs_reserve_rows(fs_cuckoo *t, uint64_t rows) {
    if (rows <= t->rows_capacity) return 0;
    uint64_t cap = t->rows_capacity ? t->rows_capacity : 1024;
    while (cap < rows) cap += cap / 2;
    uint8_t *arena = fs_big_realloc(t->arena, t->rows_capacity * t->row_bytes, cap * t->row_bytes);
    if (!arena) return -ENOMEM;
    t->arena = arena;
    uint32_t *stamps = realloc(t->stamps, cap * sizeof *stamps);
    if (!stamps) return -ENOMEM;
    t->stamps = stamps;
    if (t->precision == FS_PREC_I8) {
        float *scales = realloc(t->scales, cap * sizeof *scales);
        if (!scales) return -ENOMEM;
        t->scales = scales;
    }
    t->rows_capacity = cap;
    return 0;
}

int fs_cuckoo_init(fs_cuckoo *t, uint32_t dim, uint32_t precision, uint64_t expected, uint32_t admit_after) {
    memset(t, 0, sizeof *t);
    if (dim == 0 || dim > 65536 || precision > FS_PREC_I8) return -EINVAL;
    t->dim = dim;
    t->precision = precision;
    t->row_bytes = dim * (precision == FS_PREC_F32 ? 4 : precision == FS_PREC_F16 ? 2 : 1);
    t->admit_after = admit_after ? admit_after : 1;
    t->seed = 0x9e3779b97f4a7c15ULL;
    t->rng = 0x2545f4914f6cdd1dULL;
    /* aim at 90% occupancy of 4-slot buckets, which bucketised cuckoo reaches reliably */
    uint64_t buckets = expected / (FS_CUCKOO_SLOTS * 9 / 10) + 16;
    if (fs_alloc_buckets(t, buckets) != 0) return -ENOMEM;
    if (fs_reserve_rows(t, expected ? expected : 1024) != 0) return -ENOMEM;
    if (t->admit_after > 1) {
        t->admit = calloc((size_t)FS_CUCKOO_ADMIT_ROWS * FS_CUCKOO_ADMIT_WIDTH, sizeof *t->admit);
        if (!t->admit) return -ENOMEM;
    }
    if (pthread_rwlock_init(&t->lock, NULL) != 0) return -ENOMEM;
    return 0;
}

void fs_cuckoo_free(fs_cuckoo *t) {
    fs_big_free(t->buckets, t->bucket_count * sizeof *t->buckets);
    fs_big_free(t->arena, t->rows_capacity * t->row_bytes);
    free(t->scales);
    free(t->stamps);
    free(t->free_rows);
    free(t->admit);
    pthread_rwlock_destroy(&t->lock);
    memset(t, 0, sizeof *t);
}

#define FS_PREFETCH_AHEAD 16

uint64_t fs_cuckoo_lookup(fs_cuckoo *t, const uint64_t *keys, uint64_t n, float *out, uint8_t *found,
                          uint32_t now_s, uint32_t ttl_s) {
    /* Two passes so that memory latency overlaps: find every key (buckets prefetched 16 keys ahead)
     * and prefetch its row; then copy the rows, by now mostly in cache. */
    uint64_t hits = 0;
    uint32_t small[4096], *rows = n <= 4096 ? small : malloc(n * sizeof *rows);
    pthread_rwlock_rdlock(&t->lock);
    for (uint64_t i = 0; i < n; i++) {
        if (i + FS_PREFETCH_AHEAD < n) {
            __builtin_prefetch(&t->buckets[fs_b1(t, keys[i + FS_PREFETCH_AHEAD])]);
            __builtin_prefetch(&t->buckets[fs_b2(t, keys[i + FS_PREFETCH_AHEAD])]);
        }
        fs_cuckoo_slot *s = keys[i] ? fs_find(t, keys[i]) : NULL;
        if (s && ttl_s && now_s - t->stamps[s->row] > ttl_s) s = NULL; /* expired: a miss until swept */
        uint32_t row = s ? s->row : UINT32_MAX;
        if (rows) rows[i] = row;
        if (s) {
            const uint8_t *data = t->arena + (uint64_t)row * t->row_bytes;
            for (uint32_t off = 0; off < t->row_bytes; off += 64) __builtin_prefetch(data + off);
        }
        if (!rows) { /* no scratch memory: copy in the same pass */
            if (s) fs_row_load(t, row, out + i * t->dim);
            else memset(out + i * t->dim, 0, (size_t)t->dim * sizeof(float));
            found[i] = s != NULL;
            hits += s != NULL;
        }
    }
    for (uint64_t i = 0; rows && i < n; i++) {
        if (rows[i] != UINT32_MAX) {
            fs_row_load(t, rows[i], out + i * t->dim);
            found[i] = 1;
            hits++;
        } else {
            memset(out + i * t->dim, 0, (size_t)t->dim * sizeof(float));
            found[i] = 0;
        }
    }
    pthread_rwlock_unlock(&t->lock);
    if (rows != small) free(rows);
    return hits;
}

/* Count one sighting of a new key; 1 when it has now been seen often enough to get a row. The
 * estimate is the minimum over the sketch's rows: collisions can only raise it (admitting early). */
static int fs_admitted(fs_cuckoo *t, uint64_t key) {
    if (t->admit_after <= 1) return 1;
    uint32_t estimate = UINT16_MAX;
    for (uint32_t r = 0; r < FS_CUCKOO_ADMIT_ROWS; r++) {
        uint16_t *c = &t->admit[r * FS_CUCKOO_ADMIT_WIDTH + fs_range(fs_mix(key + r * 0x9e3779b97f4a7c15ULL), FS_CUCKOO_ADMIT_WIDTH)];
        if (*c < UINT16_MAX) (*c)++;
        if (*c < estimate) estimate = *c;
    }
    return estimate >= t->admit_after;
}

static int fs_new_row(fs_cuckoo *t, uint32_t *row) {
    if (t->free_count) {
        *row = t->free_rows[--t->free_count];
        return 0;
    }
    if (t->rows_used >= UINT32_MAX) return -ENOMEM;
    int rc = fs_reserve_rows(t, t->rows_used + 1);
    if (rc) return rc;
    *row = (uint32_t)t->rows_used++;
    return 0;
}

static int fs_put(fs_cuckoo *t, uint64_t key, const float *values, uint32_t now_s, int admit, uint8_t *status) {
    fs_cuckoo_slot *s = fs_find(t, key);
    if (s) {
        fs_row_store(t, s->row, values);
        t->stamps[s->row] = now_s;
        *status = FS_UPDATED;
        return 0;
    }
    if (admit && !fs_admitted(t, key)) {
        *status = FS_PENDING;
        return 0;
    }
    uint32_t row;
    int rc = fs_new_row(t, &row);
    if (rc) return rc;
    fs_row_store(t, row, values);
    t->stamps[row] = now_s;
    rc = fs_insert(t, key, row);
    if (rc) return rc;
    t->size++;
    *status = FS_INSERTED;
    return 0;
}

int fs_cuckoo_upsert(fs_cuckoo *t, const uint64_t *keys, uint64_t n, const float *values, uint8_t *status,
                     uint32_t now_s, int admit) {
    for (uint64_t i = 0; i < n; i++)
        if (keys[i] == 0) return -EINVAL; /* checked before anything changes */
    int rc = 0;
    pthread_rwlock_wrlock(&t->lock);
    for (uint64_t i = 0; i < n && rc == 0; i++) rc = fs_put(t, keys[i], values + i * t->dim, now_s, admit, &status[i]);
    pthread_rwlock_unlock(&t->lock);
    return rc;
}

int fs_cuckoo_drift(fs_cuckoo *t, const uint64_t *keys, uint64_t n, const float *targets, const float *rates,
                    float *out, uint8_t *status, uint32_t now_s, int commit) {
    int rc = 0;
    float *u = malloc((size_t)t->dim * sizeof(float));
    if (!u) return -ENOMEM;
    /* A plan (commit 0) changes nothing, so readers may share the table with it. */
    if (commit) pthread_rwlock_wrlock(&t->lock);
    else pthread_rwlock_rdlock(&t->lock);
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        const float *target = targets + i * t->dim;
        float rate = rates[i];
        fs_cuckoo_slot *s = keys[i] ? fs_find(t, keys[i]) : NULL;
        if (!s) {
            uint8_t put = rate > 0 && keys[i] ? FS_INSERTED : FS_PENDING;
            if (commit && put == FS_INSERTED) rc = fs_put(t, keys[i], target, now_s, 1, &put);
            status[i] = put == FS_INSERTED ? 2 : 0;
            if (out && put == FS_INSERTED && commit) fs_row_load(t, fs_find(t, keys[i])->row, out + i * t->dim);
            else if (out && put == FS_INSERTED) memcpy(out + i * t->dim, target, (size_t)t->dim * sizeof(float));
            else if (out) memset(out + i * t->dim, 0, (size_t)t->dim * sizeof(float));
            continue;
        }
        fs_row_load(t, s->row, u);
        status[i] = 0;
        if (rate != 0) {
            double norm = 0;
            for (uint32_t k = 0; k < t->dim; k++) {
                u[k] += rate * (target[k] - u[k]);
                norm += (double)u[k] * u[k];
            }
            if (norm > 1e-24) {
                float inv = (float)(1.0 / sqrt(norm));
                for (uint32_t k = 0; k < t->dim; k++) u[k] *= inv;
                status[i] = 1;
                if (commit) {
                    fs_row_store(t, s->row, u);
                    t->stamps[s->row] = now_s;
                }
            } else {
                fs_row_load(t, s->row, u); /* a zero result keeps the old vector */
            }
        }
        /* committed: the row as stored (its precision); planned: the exact move */
        if (out && commit) fs_row_load(t, s->row, out + i * t->dim);
        else if (out) memcpy(out + i * t->dim, u, (size_t)t->dim * sizeof(float));
    }
    pthread_rwlock_unlock(&t->lock);
    free(u);
    return rc;
}

static void fs_release_row(fs_cuckoo *t, uint32_t row) {
    if (t->free_count == t->free_capacity) {
        uint64_t cap = t->free_capacity ? t->free_capacity * 2 : 1024;
        uint32_t *rows = realloc(t->free_rows, cap * sizeof *rows);
        if (!rows) return; /* the row leaks until the next growth: never a correctness issue */
        t->free_rows = rows;
        t->free_capacity = cap;
    }
    t->free_rows[t->free_count++] = row;
}

uint64_t fs_cuckoo_expire(fs_cuckoo *t, uint32_t now_s, uint32_t ttl_s) {
    uint64_t removed = 0;
    pthread_rwlock_wrlock(&t->lock);
    for (uint64_t b = 0; b < t->bucket_count; b++) {
        for (int i = 0; i < FS_CUCKOO_SLOTS; i++) {
            fs_cuckoo_slot *s = &t->buckets[b].slots[i];
            if (s->key && now_s - t->stamps[s->row] > ttl_s) {
                fs_release_row(t, s->row);
                s->key = 0;
                removed++;
            }
        }
    }
    for (uint32_t i = 0; i < t->stash_used;) {
        if (now_s - t->stamps[t->stash[i].row] > ttl_s) {
            fs_release_row(t, t->stash[i].row);
            t->stash[i] = t->stash[--t->stash_used];
            removed++;
        } else {
            i++;
        }
    }
    t->size -= removed;
    pthread_rwlock_unlock(&t->lock);
    return removed;
}

uint64_t fs_cuckoo_remove(fs_cuckoo *t, const uint64_t *keys, uint64_t n, uint8_t *removed) {
    uint64_t count = 0;
    pthread_rwlock_wrlock(&t->lock);
    for (uint64_t i = 0; i < n; i++) {
        fs_cuckoo_slot *s = keys[i] ? fs_find(t, keys[i]) : NULL;
        removed[i] = s != NULL;
        if (!s) continue;
        fs_release_row(t, s->row);
        if (s >= t->stash && s < t->stash + t->stash_used) {
            *s = t->stash[--t->stash_used]; /* keep the stash dense */
        } else {
            s->key = 0;
        }
        count++;
    }
    t->size -= count;
    pthread_rwlock_unlock(&t->lock);
    return count;
}

uint64_t fs_cuckoo_bytes(const fs_cuckoo *t) {
    uint64_t rows = t->rows_used;
    return t->bucket_count * sizeof(fs_cuckoo_bucket) + rows * t->row_bytes + rows * sizeof(uint32_t) +
           (t->precision == FS_PREC_I8 ? rows * sizeof(float) : 0) + t->free_capacity * sizeof(uint32_t) +
           (t->admit ? (uint64_t)FS_CUCKOO_ADMIT_ROWS * FS_CUCKOO_ADMIT_WIDTH * sizeof(uint16_t) : 0);
}

uint64_t fs_cuckoo_export(fs_cuckoo *t, uint64_t *keys, float *rows, uint32_t *stamps, uint64_t capacity) {
    uint64_t n = 0;
    pthread_rwlock_rdlock(&t->lock);
    for (uint64_t b = 0; b < t->bucket_count; b++) {
        for (int i = 0; i < FS_CUCKOO_SLOTS; i++) {
            fs_cuckoo_slot *s = &t->buckets[b].slots[i];
            if (s->key && n < capacity) {
                keys[n] = s->key;
                fs_row_load(t, s->row, rows + n * t->dim);
                stamps[n++] = t->stamps[s->row];
            }
        }
    }
    for (uint32_t i = 0; i < t->stash_used && n < capacity; i++) {
        keys[n] = t->stash[i].key;
        fs_row_load(t, t->stash[i].row, rows + n * t->dim);
        stamps[n++] = t->stamps[t->stash[i].row];
    }
    pthread_rwlock_unlock(&t->lock);
    return n;
}
