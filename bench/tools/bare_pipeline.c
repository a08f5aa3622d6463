/*
 * The floor of the latency rows, in C: the deployment's shape with no framework and no JavaScript.
 *
 *   service -PUSH-> "subject" -PUSH-> 2 x "worker" -PUSH-> "im" -PUB-> service   (4 hops, 5 processes)
 *
 * Each relay is a blocking zmq_recv/zmq_send loop on single 135-byte frames. The service measures
 * one message at a time (p50/p90/p99), a closed-loop peak (2,000 outstanding, 3 s), then open loop
 * at each RATE given (3 s each, paced every ~0.15 ms, each message dated from when it was due).
 * `deno task bench` measures the same shape with the relays in Deno ("bare pipeline" rows); this
 * program says whether JavaScript is what stands between those rows and the latency targets.
 *
 * Build and run (any libzmq 4.3; Debian: `apt-get install libzmq5`):
 *   gcc -O2 -o /tmp/bare_pipeline bench/tools/bare_pipeline.c -ldl -lpthread
 *   ZLIB=/usr/lib/x86_64-linux-gnu/libzmq.so.5 sh bench/tools/bare_pipeline.sh /tmp/bare_pipeline 10000 50000
 *
 * libzmq is loaded with dlopen (ZLIB), so no headers are needed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *(*z_ctx_new)(void);
static void *(*z_socket)(void *, int);
static int (*z_bind)(void *, const char *);
static int (*z_connect)(void *, const char *);
static int (*z_send)(void *, const void *, size_t, int);
static int (*z_recv)(void *, void *, size_t, int);
static int (*z_setsockopt)(void *, int, const void *, size_t);

enum { PUB = 1, SUB = 2, PULL = 7, PUSH = 8, SUBSCRIBE = 6, SNDHWM = 23, RCVHWM = 24 };
enum { SIZE = 135, WINDOW = 2000 };

static void load(void) {
  const char *path = getenv("ZLIB");
  void *h = dlopen(path ? path : "libzmq.so.5", RTLD_LAZY);
  if (!h) {
    fprintf(stderr, "cannot load libzmq (set ZLIB to its path): %s\n", dlerror());
    exit(2);
  }
  z_ctx_new = dlsym(h, "zmq_ctx_new");
  z_socket = dlsym(h, "zmq_socket");
  z_bind = dlsym(h, "zmq_bind");
  z_connect = dlsym(h, "zmq_connect");
  z_send = dlsym(h, "zmq_send");
  z_recv = dlsym(h, "zmq_recv");
  z_setsockopt = dlsym(h, "zmq_setsockopt");
}

static uint64_t now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000ull + t.tv_nsec;
}

static void *ctx;
static const char *dir;

static void *sock(int type) {
  void *s = z_socket(ctx, type);
  int unlimited = 0;
  z_setsockopt(s, SNDHWM, &unlimited, sizeof unlimited);
  z_setsockopt(s, RCVHWM, &unlimited, sizeof unlimited);
  return s;
}

static const char *ep(const char *name) {
  static char b[4][256];
  static int i;
  i = (i + 1) % 4;
  snprintf(b[i], sizeof b[i], "ipc://%s/%s", dir, name);
  return b[i];
}

/* Ends the process when stdin closes (the runner keeps it open). */
static void *watch_stdin(void *arg) {
  char b[64];
  (void)arg;
  while (read(0, b, sizeof b) > 0) {
  }
  _exit(0);
  return 0;
}

static void relay(const char *in, int bind_in, const char *out, int bind_out, int out_type) {
  void *a = sock(PULL), *b = sock(out_type);
  if (bind_in) z_bind(a, in); else z_connect(a, in);
  if (bind_out) z_bind(b, out); else z_connect(b, out);
  pthread_t t;
  pthread_create(&t, 0, watch_stdin, 0);
  char buf[SIZE];
  for (;;) {
    int n = z_recv(a, buf, SIZE, 0);
    if (n >= 0) z_send(b, buf, n, 0);
  }
}

static void *sub;
static uint64_t *lat;
static long nlat, cap;
static volatile long received;

static void *reader(void *arg) {
  char buf[SIZE];
  (void)arg;
  for (;;) {
    if (z_recv(sub, buf, SIZE, 0) < 0) continue;
    uint64_t t0;
    memcpy(&t0, buf, 8);
    if (t0 && nlat < cap) lat[nlat++] = now() - t0;
    __atomic_add_fetch(&received, 1, __ATOMIC_SEQ_CST);
  }
  return 0;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *what) {
  qsort(lat, nlat, sizeof *lat, cmp);
  if (!nlat) { printf("%s: nothing arrived\n", what); return; }
  printf("%s: n=%ld p50 %.3f p90 %.3f p99 %.3f ms\n", what, nlat, lat[nlat / 2] / 1e6,
         lat[nlat * 9 / 10] / 1e6, lat[nlat * 99 / 100] / 1e6);
  fflush(stdout);
}

static void service(int argc, char **argv) {
  void *out = sock(PUSH);
  z_connect(out, ep("in"));
  sub = sock(SUB);
  z_setsockopt(sub, SUBSCRIBE, "", 0);
  z_connect(sub, ep("out"));
  cap = 20000000;
  lat = malloc(cap * sizeof *lat);
  pthread_t t;
  pthread_create(&t, 0, reader, 0);
  char buf[SIZE];
  memset(buf, 'x', SIZE);
  uint64_t zero = 0;
  memcpy(buf, &zero, 8);
  for (int i = 0; i < 500 && !received; i++) { /* until the whole path is up */
    z_send(out, buf, SIZE, 0);
    usleep(20000);
  }
  if (!received) { fprintf(stderr, "the pipeline did not come up\n"); exit(1); }
  usleep(200000);
  nlat = 0;
  for (int i = 0; i < 5000; i++) {
    long r = received;
    uint64_t t0 = now();
    memcpy(buf, &t0, 8);
    z_send(out, buf, SIZE, 0);
    while (received == r) {
    }
  }
  report("one at a time");
  memcpy(buf, &zero, 8);
  long sent = 0, base = received;
  uint64_t s0 = now();
  while (now() - s0 < 3000000000ull) {
    while (sent - (received - base) < WINDOW) { z_send(out, buf, SIZE, 0); sent++; }
    usleep(50);
  }
  printf("closed-loop peak: %.0f msgs/s\n", (received - base) / ((now() - s0) / 1e9));
  fflush(stdout);
  usleep(500000);
  for (int k = 0; k < argc; k++) {
    double rate = atof(argv[k]);
    uint64_t period = (uint64_t)(1e9 / rate), start = now();
    long n = 0;
    nlat = 0;
    while (now() - start < 3000000000ull) {
      for (uint64_t t = now(); start + n * period <= t; n++) {
        uint64_t due = start + n * period;
        memcpy(buf, &due, 8);
        z_send(out, buf, SIZE, 0);
      }
      struct timespec nap = {0, 150000};
      nanosleep(&nap, 0);
    }
    usleep(300000);
    char what[64];
    snprintf(what, sizeof what, "open loop %.0f/s", rate);
    report(what);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s subject|worker|im|service DIR [RATE...]\n", argv[0]);
    return 2;
  }
  load();
  ctx = z_ctx_new();
  dir = argv[2];
  if (!strcmp(argv[1], "subject")) relay(ep("in"), 1, ep("work"), 1, PUSH);
  else if (!strcmp(argv[1], "worker")) relay(ep("work"), 0, ep("im"), 0, PUSH);
  else if (!strcmp(argv[1], "im")) relay(ep("im"), 1, ep("out"), 1, PUB);
  else if (!strcmp(argv[1], "service")) service(argc - 3, argv + 3);
  else { fprintf(stderr, "unknown role %s\n", argv[1]); return 2; }
  return 0;
}
