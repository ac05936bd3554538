/* C tests of the ring and the message validator; pytest builds this plain and with
 * -fsanitize=address,undefined and runs each case (see tests/native/test_c_core.py). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../fs_msg.h"
#include "../fs_ring.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static char name[64];
static const int64_t SEC = 1000000000LL;

static void fresh_name(const char *tag) { snprintf(name, sizeof name, "/fs-ctest-%s-%d", tag, getpid()); }

typedef struct { uint32_t client; uint32_t pad; uint64_t seq; uint64_t answer; } echo_msg;

/* Serve echo requests until `total` are answered; counts duplicates per client in `seen`. */
static void serve_echo(fs_ring *srv, uint64_t total, uint32_t clients, uint64_t per_client, uint8_t *seen) {
    uint64_t served = 0;
    while (served < total) {
        uint32_t slot;
        uint64_t len;
        int rc = fs_ring_next(srv, fs_ring_now_ns() + 30 * SEC, 20000, &slot, &len);
        CHECK(rc == 0);
        CHECK(len == sizeof(echo_msg));
        echo_msg m;
        memcpy(&m, fs_ring_request_area(srv, slot), sizeof m);
        CHECK(m.client < clients && m.seq < per_client);
        uint8_t *bit = &seen[m.client * per_client + m.seq];
        CHECK(*bit == 0); /* never delivered twice */
        *bit = 1;
        m.answer = m.seq * 2 + 1;
        memcpy(fs_ring_response_area(srv, slot), &m, sizeof m);
        CHECK(fs_ring_complete(srv, slot, sizeof m) == 0);
        served++;
        if ((served & 0xffff) == 0) fs_ring_reap(srv);
    }
}

static void client_echo(uint32_t id, uint64_t count) {
    fs_ring c;
    CHECK(fs_ring_attach(&c, name) == 0);
    for (uint64_t seq = 0; seq < count; seq++) {
        uint32_t slot;
        CHECK(fs_ring_claim(&c, fs_ring_now_ns() + 10 * SEC, &slot) == 0);
        echo_msg m = {.client = id, .seq = seq};
        memcpy(fs_ring_request_area(&c, slot), &m, sizeof m);
        CHECK(fs_ring_submit(&c, slot, sizeof m) == 0);
        uint64_t len;
        CHECK(fs_ring_wait(&c, slot, fs_ring_now_ns() + 10 * SEC, 20000, SEC, &len) == 0);
        CHECK(len == sizeof m);
        echo_msg back;
        memcpy(&back, fs_ring_response_area(&c, slot), sizeof back);
        CHECK(back.client == id && back.seq == seq && back.answer == seq * 2 + 1);
        fs_ring_release(&c, slot);
    }
    fs_ring_close(&c);
}

/* Several client processes, every message answered exactly once. */
static void test_stress(uint64_t total, uint32_t clients) {
    fresh_name("stress");
    fs_ring srv;
    CHECK(fs_ring_create(&srv, name, 8, 4, 256, 256) == 0);
    uint64_t per = total / clients;
    uint8_t *seen = calloc(clients * per, 1);
    pid_t pids[16];
    for (uint32_t i = 0; i < clients; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            client_echo(i, per);
            _exit(0);
        }
    }
    serve_echo(&srv, per * clients, clients, per, seen);
    for (uint32_t i = 0; i < clients; i++) {
        int status;
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (uint64_t i = 0; i < clients * per; i++) CHECK(seen[i] == 1); /* none lost */
    free(seen);
    fs_ring_close(&srv);
    printf("stress: %llu messages from %u processes, none lost or duplicated\n",
           (unsigned long long)(per * clients), clients);
}

static void test_round_trip_and_layout(void) {
    fresh_name("rt");
    fs_ring srv, cli;
    CHECK(fs_ring_create(&srv, name, 2, 2, 1000, 3000) == 0);
    CHECK(fs_ring_create(&cli, name, 2, 2, 1000, 3000) == -EEXIST); /* O_EXCL: never two owners */
    CHECK(fs_ring_attach(&cli, name) == 0);
    CHECK(cli.lane == 0);
    CHECK(fs_ring_response_area(&cli, 0) - fs_ring_request_area(&cli, 0) == 1024); /* 1000 rounded to a line */
    CHECK((uintptr_t)fs_ring_request_area(&cli, 1) % FS_CACHE_LINE == 0);
    uint32_t slot;
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &slot) == 0);
    CHECK(fs_ring_submit(&cli, slot, 1001) == -EINVAL); /* longer than the request area */
    memcpy(fs_ring_request_area(&cli, slot), "ping", 4);
    CHECK(fs_ring_submit(&cli, slot, 4) == 0);
    uint32_t got;
    uint64_t len;
    CHECK(fs_ring_next(&srv, fs_ring_now_ns() + SEC, 0, &got, &len) == 0);
    CHECK(got == slot && len == 4 && memcmp(fs_ring_request_area(&srv, got), "ping", 4) == 0);
    CHECK(fs_ring_complete(&srv, got, 3001) == -EINVAL);
    memcpy(fs_ring_response_area(&srv, got), "pong!", 5);
    CHECK(fs_ring_complete(&srv, got, 5) == 0);
    CHECK(fs_ring_wait(&cli, slot, fs_ring_now_ns() + SEC, 0, SEC, &len) == 0);
    CHECK(len == 5 && memcmp(fs_ring_response_area(&cli, slot), "pong!", 5) == 0);
    fs_ring_release(&cli, slot);
    CHECK(fs_ring_next(&srv, fs_ring_now_ns() + SEC / 100, 0, &got, &len) == -ETIMEDOUT); /* nothing queued */
    fs_ring_close(&cli);
    fs_ring_close(&srv);
    CHECK(fs_ring_attach(&cli, name) == -ENOENT); /* the server unlinked it */
    printf("round trip and layout: ok\n");
}

static void test_backpressure_and_abandon(void) {
    fresh_name("bp");
    fs_ring srv, cli;
    CHECK(fs_ring_create(&srv, name, 1, 2, 64, 64) == 0);
    CHECK(fs_ring_attach(&cli, name) == 0);
    uint32_t a, b, c;
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &a) == 0);
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &b) == 0);
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC / 50, &c) == -ETIMEDOUT); /* full lane: wait, then give up */
    CHECK(atomic_load(&fs_ring_slot(&cli, a)->state) == FS_SLOT_CLAIMED); /* nothing taken from the holders */
    CHECK(atomic_load(&fs_ring_slot(&cli, b)->state) == FS_SLOT_CLAIMED);
    /* no second lane: a second attacher is refused, not squeezed in */
    fs_ring other;
    CHECK(fs_ring_attach(&other, name) == -EBUSY);
    CHECK(fs_ring_submit(&cli, a, 8) == 0);
    uint64_t len;
    CHECK(fs_ring_wait(&cli, a, fs_ring_now_ns() + SEC / 50, 0, SEC, &len) == -ETIMEDOUT); /* server never answers */
    CHECK(atomic_load(&fs_ring_slot(&cli, a)->state) == FS_SLOT_ABANDONED);
    uint32_t got;
    CHECK(fs_ring_next(&srv, fs_ring_now_ns() + SEC / 50, 0, &got, &len) == -ETIMEDOUT); /* abandoned: skipped */
    CHECK(atomic_load(&fs_ring_slot(&cli, a)->state) == FS_SLOT_FREE);                 /* and freed */
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &c) == 0 && c == a);
    /* abandoned while the server computes: completing it frees the slot instead of publishing */
    CHECK(fs_ring_submit(&cli, c, 8) == 0);
    CHECK(fs_ring_next(&srv, fs_ring_now_ns() + SEC, 0, &got, &len) == 0);
    CHECK(fs_ring_wait(&cli, c, fs_ring_now_ns() + SEC / 100, 0, SEC, &len) == -ETIMEDOUT);
    CHECK(fs_ring_complete(&srv, got, 8) == -ETIMEDOUT);
    CHECK(atomic_load(&fs_ring_slot(&cli, c)->state) == FS_SLOT_FREE);
    fs_ring_close(&cli);
    fs_ring_close(&srv);
    printf("backpressure and abandon: ok\n");
}

static void test_peer_death(void) {
    fresh_name("death");
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t server = fork();
    CHECK(server >= 0);
    if (server == 0) {
        fs_ring srv;
        CHECK(fs_ring_create(&srv, name, 1, 1, 64, 64) == 0);
        CHECK(write(ready[1], "r", 1) == 1);
        uint32_t slot;
        uint64_t len;
        fs_ring_next(&srv, fs_ring_now_ns() + 60 * SEC, 0, &slot, &len); /* take the request, never answer */
        pause();
        _exit(0);
    }
    char byte;
    CHECK(read(ready[0], &byte, 1) == 1);
    fs_ring cli;
    CHECK(fs_ring_attach(&cli, name) == 0);
    uint32_t slot;
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &slot) == 0);
    CHECK(fs_ring_submit(&cli, slot, 1) == 0);
    kill(server, SIGKILL);
    CHECK(waitpid(server, NULL, 0) == server);
    int64_t start = fs_ring_now_ns();
    uint64_t len;
    CHECK(fs_ring_wait(&cli, slot, start + 5 * SEC, 0, SEC, &len) == -EPIPE);
    /* -EPIPE, not -ETIMEDOUT: the death was noticed before the 5 s deadline */
    fs_ring_close(&cli);
    shm_unlink(name); /* what remove_stale_segments does at the next start-up */
    printf("peer death: ok\n");
}

/* A client process that attaches, submits one request and exits: it dies holding its lane. */
static pid_t submit_and_die(void) {
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        fs_ring cli;
        CHECK(fs_ring_attach(&cli, name) == 0);
        uint32_t slot;
        CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &slot) == 0);
        CHECK(fs_ring_submit(&cli, slot, 1) == 0);
        _exit(0);
    }
    return child;
}

static void test_reap_dead_client(void) {
    fresh_name("reap");
    fs_ring srv;
    CHECK(fs_ring_create(&srv, name, 1, 2, 64, 64) == 0);
    pid_t child = submit_and_die();
    CHECK(waitpid(child, NULL, 0) == child);
    fs_ring cli;
    CHECK(fs_ring_attach(&cli, name) == -EBUSY);
    CHECK(fs_ring_reap(&srv) == 1);
    CHECK(fs_ring_attach(&cli, name) == 0);
    uint32_t got;
    uint64_t len;
    CHECK(fs_ring_next(&srv, fs_ring_now_ns() + SEC / 100, 0, &got, &len) == -ETIMEDOUT); /* stale request dropped */
    fs_ring_close(&cli);
    fs_ring_close(&srv);
    printf("reap dead client: ok\n");
}

static uint64_t build_message(uint8_t *area, uint64_t cap) {
    memset(area, 0, cap);
    fs_msg_header h = {.magic = FS_MSG_MAGIC, .method = 1, .tensor_count = 2, .request_id = 7};
    strcpy(h.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    strcpy(h.feature_tag, "feed");
    fs_tensor_desc a = {.dtype = FS_I64, .ndim = 1, .shape = {3}, .offset = FS_MSG_DATA_OFFSET, .nbytes = 24};
    strcpy(a.name, "candidates");
    fs_tensor_desc b = {.dtype = FS_F32, .ndim = 2, .shape = {2, 2}, .offset = FS_MSG_DATA_OFFSET + 64, .nbytes = 16};
    strcpy(b.name, "context");
    h.proto_offset = FS_MSG_DATA_OFFSET + 128;
    h.proto_len = 10;
    h.total_len = h.proto_offset + h.proto_len;
    memcpy(area, &h, sizeof h);
    memcpy(area + sizeof h, &a, sizeof a);
    memcpy(area + sizeof h + sizeof a, &b, sizeof b);
    return h.total_len;
}

static void expect_invalid(uint8_t *area, uint64_t len, const char *needle) {
    char err[160] = "";
    CHECK(fs_msg_validate(area, len, err, sizeof err) == -EINVAL);
    if (strstr(err, needle) == NULL) {
        fprintf(stderr, "expected '%s' in '%s'\n", needle, err);
        exit(1);
    }
}

static void test_validator(void) {
    uint64_t cap = 4096;
    uint8_t *area = malloc(cap);
    char err[160];
    uint64_t len = build_message(area, cap);
    CHECK(fs_msg_validate(area, len, err, sizeof err) == 0);
    fs_msg_header *h = (fs_msg_header *)area;
    fs_tensor_desc *d = (fs_tensor_desc *)(area + sizeof *h);

    expect_invalid(area, 100, "shorter than its header");
    h->magic = 1; expect_invalid(area, len, "magic"); build_message(area, cap);
    expect_invalid(area, len + 1, "total_len");
    h->tensor_count = 9; expect_invalid(area, len, "tensor_count"); build_message(area, cap);
    memset(h->traceparent, 'x', sizeof h->traceparent); expect_invalid(area, len, "traceparent"); build_message(area, cap);
    h->proto_len = 1u << 30; expect_invalid(area, len, "proto bytes"); build_message(area, cap);
    d[0].dtype = 42; expect_invalid(area, len, "dtype 42"); build_message(area, cap);
    d[0].ndim = 5; expect_invalid(area, len, "ndim"); build_message(area, cap);
    d[0].shape[0] = -3; expect_invalid(area, len, "negative"); build_message(area, cap);
    d[0].shape[0] = 4; expect_invalid(area, len, "does not match its shape"); build_message(area, cap);
    d[1].ndim = 4; d[1].shape[0] = d[1].shape[1] = d[1].shape[2] = d[1].shape[3] = INT64_MAX;
    expect_invalid(area, len, "overflows"); build_message(area, cap);
    d[0].offset = FS_MSG_DATA_OFFSET + 1; expect_invalid(area, len, "misplaced"); build_message(area, cap);
    d[0].offset = 64; expect_invalid(area, len, "misplaced"); build_message(area, cap);
    d[0].offset = UINT64_MAX - 63; expect_invalid(area, len, "outside"); build_message(area, cap);
    d[1].offset = FS_MSG_DATA_OFFSET; expect_invalid(area, len, "overlap"); build_message(area, cap);
    strcpy(d[1].name, "candidates"); expect_invalid(area, len, "twice"); build_message(area, cap);
    memset(d[0].name, 'n', sizeof d[0].name); expect_invalid(area, len, "unterminated"); build_message(area, cap);

    /* random mutations of a valid message: the validator must never read outside [0, len) (ASan checks) */
    srand(1234);
    for (int round = 0; round < 200000; round++) {
        uint64_t n = build_message(area, cap);
        int flips = 1 + rand() % 8;
        for (int f = 0; f < flips; f++) area[rand() % n] = (uint8_t)rand();
        uint64_t l = (uint64_t)(rand() % (int)n) + 1;
        uint8_t *exact = malloc(l); /* an allocation of exactly l bytes: any overread trips ASan */
        memcpy(exact, area, l);
        fs_msg_validate(exact, l, err, sizeof err);
        free(exact);
    }
    free(area);
    printf("validator: ok\n");
}


/* A header whose slots_offset + lanes x slots x stride wraps around 64 bits must be refused, and a
 * header rewritten after attach must move nothing: the client computes every offset from its copy. */
static void test_layout_trust(void) {
    fresh_name("layout");
    fs_ring srv;
    CHECK(fs_ring_create(&srv, name, 1, 1, 64, 64) == 0);
    fs_ring_header *h = srv.hdr;
    uint64_t honest = h->slots_offset;
    fs_ring cli;
    uint64_t stride = h->slot_stride;
    /* capacities whose stride exceeds the segment, so that size - stride wraps to near 2^64 and
     * slots_offset + lanes x slots x stride == size holds only modulo 2^64 */
    h->request_capacity = 1ull << 27;
    h->response_capacity = 1ull << 27;
    h->slot_stride = sizeof(fs_slot) + (1ull << 27) + (1ull << 27);
    h->slots_offset = srv.size - h->slot_stride;
    CHECK(h->slots_offset > srv.size);
    CHECK(fs_ring_attach(&cli, name) == -EPROTO);
    h->request_capacity = 64;
    h->response_capacity = 64;
    h->slot_stride = stride;
    h->slots_offset = honest;
    CHECK(fs_ring_attach(&cli, name) == 0);
    /* a hostile server now rewrites the shared header: nothing the client computes may follow it */
    h->lane_count = FS_RING_MAX_LANES;
    h->slots_per_lane = FS_RING_MAX_SLOTS_PER_LANE;
    h->request_capacity = FS_RING_MAX_CAPACITY;
    h->slots_offset = 1ull << 40;
    CHECK(fs_ring_slot_count(&cli) == 1);
    CHECK(cli.layout.request_capacity == 64);
    CHECK(fs_ring_request_area(&cli, 0) == cli.base + honest + sizeof(fs_slot));
    uint32_t slot;
    CHECK(fs_ring_claim(&cli, fs_ring_now_ns() + SEC, &slot) == 0 && slot == 0);
    CHECK(fs_ring_submit(&cli, slot, 65) == -EINVAL); /* past the capacity it attached with */
    CHECK(fs_ring_release(&cli, slot) == 0);
    fs_ring_close(&cli);
    fs_ring_close(&srv);
    printf("layout trust: ok\n");
}

/* Reaping a dead client's lane while a dispatcher serves one of its slots: the dispatcher's complete()
 * finds the slot abandoned (not stolen), and the slot comes back free. */
static void test_reap_while_busy(void) {
    fresh_name("reapbusy");
    fs_ring srv;
    CHECK(fs_ring_create(&srv, name, 1, 2, 64, 64) == 0);
    pid_t child = submit_and_die();
    uint32_t got;
    uint64_t len;
    CHECK(fs_ring_next(&srv, fs_ring_now_ns() + 5 * SEC, 0, &got, &len) == 0); /* the dispatcher holds it: BUSY */
    CHECK(waitpid(child, NULL, 0) == child);
    CHECK(fs_ring_reap(&srv) == 1);
    CHECK(atomic_load(&fs_ring_slot(&srv, got)->state) == FS_SLOT_ABANDONED);
    CHECK(fs_ring_complete(&srv, got, 1) == -ETIMEDOUT); /* "the client left", not a protocol error */
    CHECK(atomic_load(&fs_ring_slot(&srv, got)->state) == FS_SLOT_FREE);
    fs_ring_close(&srv);
    printf("reap while busy: ok\n");
}

/* A client may free only a slot of its own lane that it holds. */
static void test_release_checks(void) {
    fresh_name("release");
    fs_ring srv, a, b;
    CHECK(fs_ring_create(&srv, name, 2, 2, 64, 64) == 0);
    CHECK(fs_ring_attach(&a, name) == 0);
    b = a; /* a second lane needs a second process; pretend by pointing a copy at the other lane */
    b.lane = 1 - a.lane;
    uint32_t slot;
    CHECK(fs_ring_claim(&b, fs_ring_now_ns() + SEC, &slot) == 0);
    CHECK(fs_ring_release(&a, slot) == -EINVAL);          /* another lane's slot */
    CHECK(fs_ring_release(&a, 99) == -EINVAL);            /* no such slot */
    uint32_t mine;
    CHECK(fs_ring_claim(&a, fs_ring_now_ns() + SEC, &mine) == 0);
    CHECK(fs_ring_submit(&a, mine, 1) == 0);
    CHECK(fs_ring_release(&a, mine) == -EINVAL);          /* submitted: the server's now */
    CHECK(atomic_load(&fs_ring_slot(&srv, mine)->state) == FS_SLOT_REQUEST);
    CHECK(fs_ring_release(&b, slot) == 0);
    fs_ring_close(&a);
    fs_ring_close(&srv);
    printf("release checks: ok\n");
}

/* The concurrent fuzz: a writer thread keeps rewriting the message while the reader snapshots and
 * uses it. Whatever the interleaving, what the reader uses must satisfy the validator's promises. */
typedef struct {
    uint8_t *area;
    uint64_t len;
    atomic_int stop;
    uint64_t seed;
} race_state;

static void *race_writer(void *arg) {
    race_state *st = arg;
    uint64_t x = st->seed;
    fs_msg_header *h = (fs_msg_header *)st->area;
    fs_tensor_desc *d = (fs_tensor_desc *)(st->area + sizeof *h);
    while (!atomic_load_explicit(&st->stop, memory_order_relaxed)) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        volatile uint8_t *bytes = st->area;
        switch (x % 6) {
        case 0: ((volatile fs_msg_header *)h)->tensor_count = (uint16_t)(x >> 8); break; /* up to 65,535 */
        case 1: ((volatile fs_tensor_desc *)&d[x >> 8 & 1])->ndim = (uint8_t)(x >> 16); break;
        case 2: for (unsigned i = 0; i < FS_MSG_NAME_MAX; i++) ((volatile fs_tensor_desc *)&d[0])->name[i] = 'n'; break;
        case 3: for (unsigned i = 0; i < FS_MSG_TRACEPARENT_MAX; i++) ((volatile fs_msg_header *)h)->traceparent[i] = 't'; break;
        case 4: bytes[(x >> 8) % st->len] = (uint8_t)(x >> 32); break;
        default: build_message(st->area, st->len); break; /* back to valid, so that reads also succeed */
        }
    }
    return NULL;
}

static void test_race(uint64_t cases) {
    uint64_t cap = 4096;
    race_state st = {.area = malloc(cap), .len = cap, .seed = 88172645463325252ull};
    uint64_t len = build_message(st.area, cap);
    pthread_t writer;
    CHECK(pthread_create(&writer, NULL, race_writer, &st) == 0);
    uint64_t accepted = 0;
    char err[160];
    for (uint64_t n = 0; n < cases; n++) {
        fs_msg_snapshot m;
        if (fs_msg_read(st.area, len, &m, err, sizeof err) != 0) continue;
        accepted++;
        /* everything a decoder touches, from the snapshot only */
        CHECK(m.header.tensor_count <= FS_MSG_MAX_TENSORS);
        CHECK(strlen(m.header.traceparent) < FS_MSG_TRACEPARENT_MAX && strlen(m.header.feature_tag) < FS_MSG_TAG_MAX);
        for (uint32_t i = 0; i < m.header.tensor_count; i++) {
            CHECK(m.tensors[i].ndim <= FS_MSG_MAX_DIMS);
            CHECK(strlen(m.tensors[i].name) < FS_MSG_NAME_MAX);
            CHECK(m.tensors[i].offset + m.tensors[i].nbytes <= len);
        }
        CHECK(m.header.proto_offset + m.header.proto_len <= len);
    }
    atomic_store(&st.stop, 1);
    pthread_join(writer, NULL);
    free(st.area);
    printf("race: ok (%llu cases, %llu accepted)\n", (unsigned long long)cases, (unsigned long long)accepted);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "all";
    uint64_t stress_total = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    uint32_t stress_clients = argc > 3 ? (uint32_t)atoi(argv[3]) : 4;
    int all = strcmp(which, "all") == 0;
    if (all || !strcmp(which, "round_trip")) test_round_trip_and_layout();
    if (all || !strcmp(which, "backpressure")) test_backpressure_and_abandon();
    if (all || !strcmp(which, "peer_death")) test_peer_death();
    if (all || !strcmp(which, "reap")) test_reap_dead_client();
    if (all || !strcmp(which, "validator")) test_validator();
    if (all || !strcmp(which, "stress")) test_stress(stress_total, stress_clients);
    if (all || !strcmp(which, "layout")) test_layout_trust();
    if (all || !strcmp(which, "reap_busy")) test_reap_while_busy();
    if (all || !strcmp(which, "release")) test_release_checks();
    if (all || !strcmp(which, "race")) test_race(argc > 2 ? strtoull(argv[2], NULL, 10) : 100000);
    return 0;
}
