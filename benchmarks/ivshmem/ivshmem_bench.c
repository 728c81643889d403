// ivshmem_bench: a two-VM shared-memory transport prototype and its TCP baseline.
//
// Two single-producer/single-consumer byte rings (one per direction) live in the BAR2
// of a QEMU ivshmem-plain device (PCI 1af4:1110) that two guests share.  There are no
// interrupts (ivshmem-plain has none): both sides poll.  The same ping-pong and bulk
// tests also run over a TCP socket, so the two transports are measured by one program.
//
//   ivshmem_bench shm  pp   a|b  RUN_ID ITERS MSG      ping-pong (b is the timing side)
//   ivshmem_bench shm  bulk a|b  RUN_ID BYTES CHUNK    bulk a -> b, b verifies
//   ivshmem_bench tcp  pp   a|b  HOST PORT ITERS MSG   a listens on HOST:PORT
//   ivshmem_bench tcp  bulk a|b  HOST PORT BYTES CHUNK a listens and sends, b receives
//   ivshmem_bench find                                  print the device's resource2 path
//
// Side "a" of shm resets the rings and publishes RUN_ID in the header; side "b" waits
// for that RUN_ID, acknowledges it, and only then touches the rings, so a stale region
// from an earlier run is never read.  Results are one line of key=value pairs on stdout.
// Every run ends itself after IVSHMEM_BENCH_TIMEOUT seconds (default 900).
//
// Build: gcc -static -O2 -Wall -Wextra -o ivshmem_bench ivshmem_bench.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#define MAGIC 0x4e53495653484d31ULL /* "NSIVSHM1" */
#define CACHELINE 64

static void die(const char *what) {
  fprintf(stderr, "ivshmem_bench: %s: %s\n", what, errno ? strerror(errno) : "failed");
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

// ---- the shared region -------------------------------------------------------------
//
// offset 0      header (one 4 KiB page): magic, run id, ack, ring geometry
// offset 4 KiB  ring 0: a -> b
// ...           ring 1: b -> a
//
// Each ring: producer line (head), consumer line (tail), then `size` data bytes.  head
// and tail are free-running byte counts (never wrapped), so head - tail is the fill and
// no slot is wasted to tell full from empty.  The producer owns head, the consumer owns
// tail; each lives on its own cache line so the two sides do not write the same line.

struct hdr {
  _Atomic uint64_t magic;
  _Atomic uint64_t run_id;   // written last by side a, after the rings are reset
  _Atomic uint64_t ack;      // side b writes run_id here when it has attached
  uint64_t ring_size;        // data bytes per ring, a power of two
  uint64_t ring_off[2];      // byte offsets of the two rings in the region
};

struct ring {
  alignas(CACHELINE) _Atomic uint64_t head;  // written by the producer only
  char pad0[CACHELINE - sizeof(uint64_t)];
  alignas(CACHELINE) _Atomic uint64_t tail;  // written by the consumer only
  char pad1[CACHELINE - sizeof(uint64_t)];
  alignas(CACHELINE) unsigned char data[];
};

struct end {          // one side's private view of one ring
  struct ring *r;
  uint64_t size, mask;
  uint64_t pos;       // our own index (head for a producer, tail for a consumer)
  uint64_t seen;      // cached copy of the other side's index
};

static char *find_bar2(void) {
  static char path[512];
  DIR *d = opendir("/sys/bus/pci/devices");
  struct dirent *e;
  if (!d) die("opendir /sys/bus/pci/devices");
  while ((e = readdir(d))) {
    char buf[32];
    unsigned vendor = 0, device = 0;
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vendor", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) vendor = (unsigned)strtoul(buf, NULL, 0);
    fclose(f);
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/device", e->d_name);
    f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) device = (unsigned)strtoul(buf, NULL, 0);
    fclose(f);
    if (vendor == 0x1af4 && device == 0x1110) {
      snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource2", e->d_name);
      closedir(d);
      return path;
    }
  }
  closedir(d);
  errno = ENODEV;
  die("no ivshmem device (PCI 1af4:1110)");
  return NULL;
}

static unsigned char *map_region(size_t *len) {
  const char *path = find_bar2();
  int fd = open(path, O_RDWR | O_SYNC);
  struct stat st;
  if (fd < 0) die(path);
  if (fstat(fd, &st) < 0) die("fstat resource2");
  *len = (size_t)st.st_size;
  void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap resource2");
  close(fd);
  return p;
}

// Side a lays out the region and resets both rings; side b waits for it.
static struct hdr *attach(int side_a, uint64_t run_id, struct end *tx, struct end *rx) {
  size_t len;
  unsigned char *base = map_region(&len);
  struct hdr *h = (struct hdr *)base;
  uint64_t ring_bytes = sizeof(struct ring);
  if (side_a) {
    // the largest power of two for which the header page and two page-aligned rings fit
    uint64_t size = 4096;
#define NEED(sz) (4096 + 2 * ((ring_bytes + (sz) + 4095) & ~4095ULL))
    if (NEED(size) > len) { errno = ENOSPC; die("region too small"); }
    while (NEED(size * 2) <= len) size *= 2;
#undef NEED
    atomic_store_explicit(&h->run_id, 0, memory_order_relaxed);
    atomic_store_explicit(&h->ack, 0, memory_order_relaxed);
    h->ring_size = size;
    h->ring_off[0] = 4096;
    h->ring_off[1] = 4096 + ((ring_bytes + size + 4095) & ~4095ULL);
    for (int i = 0; i < 2; i++) {
      struct ring *r = (struct ring *)(base + h->ring_off[i]);
      atomic_store_explicit(&r->head, 0, memory_order_relaxed);
      atomic_store_explicit(&r->tail, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&h->magic, MAGIC, memory_order_relaxed);
    atomic_store_explicit(&h->run_id, run_id, memory_order_release);  // publishes the above
    while (atomic_load_explicit(&h->ack, memory_order_acquire) != run_id) _mm_pause();
  } else {
    while (atomic_load_explicit(&h->magic, memory_order_relaxed) != MAGIC ||
           atomic_load_explicit(&h->run_id, memory_order_acquire) != run_id)
      _mm_pause();
    atomic_store_explicit(&h->ack, run_id, memory_order_release);
  }
  int t = side_a ? 0 : 1;  // ring 0 carries a -> b
  tx->r = (struct ring *)(base + h->ring_off[t]);
  rx->r = (struct ring *)(base + h->ring_off[1 - t]);
  tx->size = rx->size = h->ring_size;
  tx->mask = rx->mask = h->ring_size - 1;
  tx->pos = tx->seen = rx->pos = rx->seen = 0;
  return h;
}

// Copy n bytes in, waiting (polling) for room.  Publishes after each contiguous piece so
// the consumer can start while a large write is still going in.
static void ring_write(struct end *e, const unsigned char *src, size_t n) {
  while (n) {
    uint64_t room = e->size - (e->pos - e->seen);
    if (room == 0) {
      // acquire: the consumer's copies out of the space it frees happen before we reuse it
      while ((room = e->size - (e->pos - (e->seen = atomic_load_explicit(
                                               &e->r->tail, memory_order_acquire)))) == 0)
        _mm_pause();
    }
    uint64_t off = e->pos & e->mask;
    uint64_t k = n < room ? n : room;
    if (k > e->size - off) k = e->size - off;  // up to the end of the buffer
    memcpy(e->r->data + off, src, k);
    e->pos += k;
    // release: the data bytes are visible before the new head
    atomic_store_explicit(&e->r->head, e->pos, memory_order_release);
    src += k;
    n -= k;
  }
}

// Copy out up to max bytes (at least 1), waiting for data.  Returns the count.
static size_t ring_read_some(struct end *e, unsigned char *dst, size_t max) {
  uint64_t avail = e->seen - e->pos;
  if (avail == 0) {
    while ((avail = (e->seen = atomic_load_explicit(&e->r->head, memory_order_acquire)) -
                    e->pos) == 0)
      _mm_pause();
  }
  uint64_t off = e->pos & e->mask;
  uint64_t k = avail < max ? avail : max;
  if (k > e->size - off) k = e->size - off;
  memcpy(dst, e->r->data + off, k);
  e->pos += k;
  // release: our reads of the slot are done before the producer may overwrite it
  atomic_store_explicit(&e->r->tail, e->pos, memory_order_release);
  return k;
}

static void ring_read(struct end *e, unsigned char *dst, size_t n) {
  while (n) {
    size_t k = ring_read_some(e, dst, n);
    dst += k;
    n -= k;
  }
}

// ---- a streaming checksum ------------------------------------------------------------
// 64-bit FNV-1a over 8-byte little-endian words (the tail, if any, zero-padded).  Not
// cryptographic: it catches lost, repeated, reordered or corrupted bytes, which is all
// the verification needs.  Independent of how the stream is cut into pieces.

struct sum { uint64_t h; unsigned char part[8]; size_t plen; uint64_t bytes; };

static void sum_init(struct sum *s) { memset(s, 0, sizeof *s); s->h = 0xcbf29ce484222325ULL; }

static inline uint64_t mix(uint64_t h, uint64_t w) { return (h ^ w) * 0x100000001b3ULL; }

static void sum_add(struct sum *s, const unsigned char *p, size_t n) {
  s->bytes += n;
  while (s->plen && n) { s->part[s->plen++] = *p++; n--; if (s->plen == 8) { uint64_t w; memcpy(&w, s->part, 8); s->h = mix(s->h, w); s->plen = 0; } }
  uint64_t h = s->h;
  for (; n >= 8; p += 8, n -= 8) { uint64_t w; memcpy(&w, p, 8); h = mix(h, w); }
  s->h = h;
  while (n--) s->part[s->plen++] = *p++;
}

static uint64_t sum_end(struct sum *s) {
  if (s->plen) { uint64_t w = 0; memcpy(&w, s->part, s->plen); s->h = mix(s->h, w); s->plen = 0; }
  return s->h ^ s->bytes;
}

// ---- the sender's data ----------------------------------------------------------------
// A 1 MiB xorshift pattern, sent from a different offset for every chunk, so no two
// consecutive chunks are equal and a lost or repeated chunk changes the checksum.

#define PATTERN (1u << 20)
static unsigned char *pattern;

static void make_pattern(size_t chunk) {
  pattern = aligned_alloc(4096, PATTERN + chunk + 4096);
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i < PATTERN + chunk + 4096; i += 8) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    memcpy(pattern + i, &x, 8);
  }
}

static const unsigned char *chunk_src(uint64_t k) { return pattern + ((k * 4104u) % PATTERN); }

static uint64_t expected_sum(uint64_t bytes, size_t chunk) {
  struct sum s;
  sum_init(&s);
  for (uint64_t k = 0, left = bytes; left; k++) {
    size_t n = left < chunk ? left : chunk;
    sum_add(&s, chunk_src(k), n);
    left -= n;
  }
  return sum_end(&s);
}

// ---- latency statistics -----------------------------------------------------------------
// Each round trip is timed with rdtsc (the guest's clock_gettime goes through the HPET
// under TCG, a device access per call); the tick rate is calibrated against
// CLOCK_MONOTONIC over the whole run.

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void report_rtt(const char *transport, uint64_t *t, long iters, size_t msg,
                       uint64_t ns, uint64_t ticks) {
  double ns_per_tick = (double)ns / (double)ticks;
  qsort(t, (size_t)iters, sizeof *t, cmp_u64);
  double p50 = t[iters / 2] * ns_per_tick / 1000.0;
  double p99 = t[(iters * 99) / 100] * ns_per_tick / 1000.0;
  double p999 = t[(iters * 999) / 1000] * ns_per_tick / 1000.0;
  double mean = (double)ns / iters / 1000.0;
  printf("transport=%s test=pp iters=%ld msg=%zu rtt_p50_us=%.3f rtt_p99_us=%.3f "
         "rtt_p999_us=%.3f rtt_mean_us=%.3f elapsed_s=%.3f\n",
         transport, iters, msg, p50, p99, p999, mean, ns / 1e9);
}

#define WARMUP 1000

// ---- shm tests --------------------------------------------------------------------------

static void shm_pp(int side_a, uint64_t run_id, long iters, size_t msg) {
  struct end tx, rx;
  unsigned char *buf = calloc(1, msg);
  attach(side_a, run_id, &tx, &rx);
  if (side_a) {  // echo
    for (long i = 0; i < iters + WARMUP; i++) {
      ring_read(&rx, buf, msg);
      ring_write(&tx, buf, msg);
    }
    return;
  }
  uint64_t *t = malloc(sizeof(uint64_t) * (size_t)iters), ns0 = 0, tk0 = 0;
  for (long i = 0; i < iters + WARMUP; i++) {
    if (i == WARMUP) { ns0 = now_ns(); tk0 = __rdtsc(); }
    uint64_t a = __rdtsc();
    memset(buf, (int)i, msg);
    ring_write(&tx, buf, msg);
    ring_read(&rx, buf, msg);
    if (buf[0] != (unsigned char)i || buf[msg - 1] != (unsigned char)i) {
      errno = EPROTO; die("echo mismatch");
    }
    if (i >= WARMUP) t[i - WARMUP] = __rdtsc() - a;
  }
  report_rtt("shm", t, iters, msg, now_ns() - ns0, __rdtsc() - tk0);
}

static void shm_bulk(int side_a, uint64_t run_id, uint64_t bytes, size_t chunk) {
  struct end tx, rx;
  unsigned char ok = 0;
  if (side_a) {  // sender
    make_pattern(chunk);
    uint64_t want = expected_sum(bytes, chunk);  // before timing
    attach(1, run_id, &tx, &rx);
    uint64_t t0 = now_ns();
    for (uint64_t k = 0, left = bytes; left; k++) {
      size_t n = left < chunk ? left : chunk;
      ring_write(&tx, chunk_src(k), n);
      left -= n;
    }
    ring_read(&rx, &ok, 1);  // the receiver's "all read" byte
    uint64_t ns = now_ns() - t0;
    printf("transport=shm test=bulk side=send bytes=%llu chunk=%zu sum=%016llx elapsed_s=%.3f\n",
           (unsigned long long)bytes, chunk, (unsigned long long)want, ns / 1e9);
    return;
  }
  unsigned char *buf = aligned_alloc(4096, chunk);
  struct sum s;
  sum_init(&s);
  attach(0, run_id, &tx, &rx);
  uint64_t t0 = 0, got = 0;
  while (got < bytes) {
    size_t k = ring_read_some(&rx, buf, bytes - got < chunk ? bytes - got : chunk);
    if (!got) t0 = now_ns();  // from the first byte: the sender started when we attached
    sum_add(&s, buf, k);
    got += k;
  }
  uint64_t ns = now_ns() - t0;
  ok = 1;
  ring_write(&tx, &ok, 1);
  printf("transport=shm test=bulk side=recv bytes=%llu chunk=%zu sum=%016llx elapsed_s=%.3f "
         "mib_s=%.1f\n", (unsigned long long)got, chunk, (unsigned long long)sum_end(&s),
         ns / 1e9, (double)got / (1 << 20) / (ns / 1e9));
}

// ---- tcp tests ------------------------------------------------------------------------

static int tcp_sock(int side_a, const char *host, int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int one = 1, fd;
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { errno = EINVAL; die("address"); }
  if (side_a) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(l, 1) < 0) die("listen");
    fd = accept(l, NULL, NULL);
    if (fd < 0) die("accept");
    close(l);
  } else {
    uint64_t t0 = now_ns();
    for (;;) {  // side a may not be listening yet
      fd = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
      close(fd);
      if (now_ns() - t0 > 30000000000ULL) die("connect");
      usleep(20000);
    }
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void send_all(int fd, const unsigned char *p, size_t n) {
  while (n) {
    ssize_t k = send(fd, p, n, 0);
    if (k < 0) { if (errno == EINTR) continue; die("send"); }
    p += k; n -= (size_t)k;
  }
}

static void recv_all(int fd, unsigned char *p, size_t n) {
  while (n) {
    ssize_t k = recv(fd, p, n, 0);
    if (k == 0) { errno = ECONNRESET; die("recv: peer closed"); }
    if (k < 0) { if (errno == EINTR) continue; die("recv"); }
    p += k; n -= (size_t)k;
  }
}

static void tcp_pp(int side_a, const char *host, int port, long iters, size_t msg) {
  int fd = tcp_sock(side_a, host, port);
  unsigned char *buf = calloc(1, msg);
  if (side_a) {
    for (long i = 0; i < iters + WARMUP; i++) { recv_all(fd, buf, msg); send_all(fd, buf, msg); }
    close(fd);
    return;
  }
  uint64_t *t = malloc(sizeof(uint64_t) * (size_t)iters), ns0 = 0, tk0 = 0;
  for (long i = 0; i < iters + WARMUP; i++) {
    if (i == WARMUP) { ns0 = now_ns(); tk0 = __rdtsc(); }
    uint64_t a = __rdtsc();
    memset(buf, (int)i, msg);
    send_all(fd, buf, msg);
    recv_all(fd, buf, msg);
    if (buf[0] != (unsigned char)i || buf[msg - 1] != (unsigned char)i) {
      errno = EPROTO; die("echo mismatch");
    }
    if (i >= WARMUP) t[i - WARMUP] = __rdtsc() - a;
  }
  report_rtt("tcp", t, iters, msg, now_ns() - ns0, __rdtsc() - tk0);
  close(fd);
}

static void tcp_bulk(int side_a, const char *host, int port, uint64_t bytes, size_t chunk) {
  unsigned char ok = 0;
  if (side_a) {  // sender
    make_pattern(chunk);
    uint64_t want = expected_sum(bytes, chunk);
    int fd = tcp_sock(1, host, port);
    uint64_t t0 = now_ns();
    for (uint64_t k = 0, left = bytes; left; k++) {
      size_t n = left < chunk ? left : chunk;
      send_all(fd, chunk_src(k), n);
      left -= n;
    }
    recv_all(fd, &ok, 1);
    uint64_t ns = now_ns() - t0;
    printf("transport=tcp test=bulk side=send bytes=%llu chunk=%zu sum=%016llx elapsed_s=%.3f\n",
           (unsigned long long)bytes, chunk, (unsigned long long)want, ns / 1e9);
    close(fd);
    return;
  }
  int fd = tcp_sock(0, host, port);
  unsigned char *buf = aligned_alloc(4096, chunk);
  struct sum s;
  sum_init(&s);
  uint64_t t0 = 0, got = 0;
  while (got < bytes) {
    ssize_t k = recv(fd, buf, bytes - got < chunk ? bytes - got : chunk, 0);
    if (k == 0) { errno = ECONNRESET; die("recv: peer closed"); }
    if (k < 0) { if (errno == EINTR) continue; die("recv"); }
    if (!got) t0 = now_ns();
    sum_add(&s, buf, (size_t)k);
    got += (uint64_t)k;
  }
  uint64_t ns = now_ns() - t0;
  ok = 1;
  send_all(fd, &ok, 1);
  printf("transport=tcp test=bulk side=recv bytes=%llu chunk=%zu sum=%016llx elapsed_s=%.3f "
         "mib_s=%.1f\n", (unsigned long long)got, chunk, (unsigned long long)sum_end(&s),
         ns / 1e9, (double)got / (1 << 20) / (ns / 1e9));
  close(fd);
}

static void usage(void) {
  fputs("usage: ivshmem_bench shm pp|bulk a|b RUN_ID N SIZE\n"
        "       ivshmem_bench tcp pp|bulk a|b HOST PORT N SIZE\n"
        "       ivshmem_bench find\n", stderr);
  exit(2);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  // A side whose peer never shows up (the other VM failed) would otherwise spin forever.
  alarm(getenv("IVSHMEM_BENCH_TIMEOUT") ? (unsigned)atoi(getenv("IVSHMEM_BENCH_TIMEOUT")) : 900);
  if (argc == 2 && !strcmp(argv[1], "find")) { puts(find_bar2()); return 0; }
  if (argc < 4) usage();
  int side_a = !strcmp(argv[3], "a");
  if (!side_a && strcmp(argv[3], "b")) usage();
  int pp = !strcmp(argv[2], "pp");
  if (!pp && strcmp(argv[2], "bulk")) usage();
  if (!strcmp(argv[1], "shm") && argc == 7) {
    uint64_t run_id = strtoull(argv[4], NULL, 0), n = strtoull(argv[5], NULL, 0);
    size_t size = strtoull(argv[6], NULL, 0);
    if (!run_id || !n || !size) usage();
    if (pp) shm_pp(side_a, run_id, (long)n, size); else shm_bulk(side_a, run_id, n, size);
  } else if (!strcmp(argv[1], "tcp") && argc == 8) {
    int port = atoi(argv[5]);
    uint64_t n = strtoull(argv[6], NULL, 0);
    size_t size = strtoull(argv[7], NULL, 0);
    if (!n || !size) usage();
    if (pp) tcp_pp(side_a, argv[4], port, (long)n, size); else tcp_bulk(side_a, argv[4], port, n, size);
  } else {
    usage();
  }
  return 0;
}
