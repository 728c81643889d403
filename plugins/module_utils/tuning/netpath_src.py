# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The C source of ``netpath``, the per-packet half of the impaired-path lab (netpath.py).

Kept as a module_util so that it travels to managed hosts with the modules that build a
lab (Ansible ships module_utils, not loose files); netpath.py compiles it there.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NETPATH_C = r"""// SPDX-License-Identifier: GPL-3.0-or-later
// netpath: the per-packet half of netstack.tuning's impaired-path lab
// (plugins/module_utils/tuning/netpath.py), for kernels without sch_netem.
//
// It owns one TUN device in the lab's path namespace.  The namespace's policy routing sends
// every packet that arrives from the client or the server link into the TUN device; this
// program reads it, decides its fate per direction, and writes it back into the same TUN
// device when its time has come, from where the kernel forwards it by destination.  The
// bandwidth bottleneck is not done here: a tbf qdisc on the path namespace's outgoing link
// is the finite queue (netpath.py puts it there).
//
// Per direction ("up": towards --server, "down": everything else):
//   delay, jitter   packet leaves delay +- uniform(jitter) after it arrived; without
//                   reordering a packet never overtakes an earlier one of its direction
//   loss            random (Bernoulli) or Gilbert-Elliott: two states, P(good->bad) = p,
//                   P(bad->good) = r, loss probability loss_good in good, loss_bad in bad
//   reorder         that fraction of packets skips the delay (netem's meaning), so it
//                   overtakes the packets queued before it
//
//   netpath --tun NAME --server A.B.C.D [--seed N] [--stats FILE] [--rt PRIO]
//           --up "delay_us jitter_us loss_ppm ge_p_ppm ge_r_ppm ge_bad_ppm reorder_ppm"
//           --down "..."              (probabilities in parts per million; ge_p_ppm 0 = random)
//
// It prints "ready" once the device exists, and writes its counters as one JSON line to
// --stats on SIGUSR1 and at exit (SIGTERM/SIGINT).  The device disappears with the process.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_PKT 65536
#define MAX_QUEUED 200000

struct dir {
    const char *name;
    uint64_t delay_ns, jitter_ns;
    uint32_t loss, ge_p, ge_r, ge_bad, reorder;  // parts per million
    int bad;                                    // Gilbert-Elliott state
    uint64_t last_release;
    uint64_t seen, dropped, reordered, sent, overflow, bytes;
};

struct pkt {
    uint64_t release, seq;
    struct dir *d;
    uint32_t len;
    unsigned char *data;
};

static struct dir dirs[2] = {{.name = "up"}, {.name = "down"}};
static struct pkt *heap;
static size_t heap_n, queued_max;
static uint64_t seq_counter, rng_state = 0x9e3779b97f4a7c15ULL;
static volatile sig_atomic_t want_stats, want_exit;
static const char *stats_path;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(void)  // xorshift64*
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static int chance(uint32_t ppm)
{
    return ppm && (rnd() % 1000000ULL) < ppm;
}

static int earlier(const struct pkt *a, const struct pkt *b)
{
    return a->release < b->release || (a->release == b->release && a->seq < b->seq);
}

static void heap_push(struct pkt p)
{
    size_t i = heap_n++;
    while (i) {
        size_t up = (i - 1) / 2;
        if (!earlier(&p, &heap[up]))
            break;
        heap[i] = heap[up];
        i = up;
    }
    heap[i] = p;
    if (heap_n > queued_max)
        queued_max = heap_n;
}

static struct pkt heap_pop(void)
{
    struct pkt top = heap[0], last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_n)
            break;
        if (c + 1 < heap_n && earlier(&heap[c + 1], &heap[c]))
            c++;
        if (!earlier(&heap[c], &last))
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (heap_n)
        heap[i] = last;
    return top;
}

static void write_stats(void)
{
    FILE *f;
    char tmp[4096];
    if (!stats_path)
        return;
    snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path);
    f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "{\"queued\": %zu, \"queued_max\": %zu", heap_n, queued_max);
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        fprintf(f, ", \"%s\": {\"seen\": %llu, \"dropped\": %llu, \"reordered\": %llu, \"sent\": %llu, "
                   "\"overflow\": %llu, \"bytes\": %llu}", d->name, (unsigned long long)d->seen,
                (unsigned long long)d->dropped, (unsigned long long)d->reordered, (unsigned long long)d->sent,
                (unsigned long long)d->overflow, (unsigned long long)d->bytes);
    }
    fprintf(f, "}\n");
    fclose(f);
    rename(tmp, stats_path);
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_stats = 1;
    else
        want_exit = 1;
}

static int parse_dir(struct dir *d, const char *spec)
{
    unsigned long long delay_us, jitter_us;
    unsigned int loss, p, r, bad, reorder;
    if (sscanf(spec, "%llu %llu %u %u %u %u %u", &delay_us, &jitter_us, &loss, &p, &r, &bad, &reorder) != 7)
        return -1;
    if (loss > 1000000 || p > 1000000 || r > 1000000 || bad > 1000000 || reorder > 1000000 ||
        delay_us > 10000000ULL || jitter_us > delay_us)
        return -1;
    d->delay_ns = delay_us * 1000ULL;
    d->jitter_ns = jitter_us * 1000ULL;
    d->loss = loss;
    d->ge_p = p;
    d->ge_r = r;
    d->ge_bad = bad;
    d->reorder = reorder;
    return 0;
}

static int lost(struct dir *d)
{
    if (!d->ge_p)
        return chance(d->loss);
    // Gilbert-Elliott: transition first, then lose with the state's probability
    if (d->bad) {
        if (chance(d->ge_r))
            d->bad = 0;
    } else if (chance(d->ge_p)) {
        d->bad = 1;
    }
    return chance(d->bad ? d->ge_bad : d->loss);
}

static void take(int fd, unsigned char *buf, ssize_t n, uint32_t server)
{
    struct dir *d;
    uint64_t t = now_ns(), release;
    uint32_t dst = 0;

    if (n >= 20 && (buf[0] >> 4) == 4)
        memcpy(&dst, buf + 16, 4);
    d = (dst == server) ? &dirs[0] : &dirs[1];
    d->seen++;
    if (lost(d)) {
        d->dropped++;
        return;
    }
    if (chance(d->reorder)) {
        d->reordered++;
        release = t;
    } else {
        release = t + d->delay_ns;
        if (d->jitter_ns)
            release = release - d->jitter_ns + rnd() % (2 * d->jitter_ns + 1);
        if (release < d->last_release)
            release = d->last_release;
        d->last_release = release;
    }
    if (release <= t && heap_n == 0) {  // nothing to wait for: straight back out
        if (write(fd, buf, n) == n) {
            d->sent++;
            d->bytes += n;
        }
        return;
    }
    if (heap_n >= MAX_QUEUED) {
        d->overflow++;
        return;
    }
    struct pkt p = {.release = release, .seq = seq_counter++, .d = d, .len = n, .data = malloc(n)};
    if (!p.data) {
        d->overflow++;
        return;
    }
    memcpy(p.data, buf, n);
    heap_push(p);
}

int main(int argc, char **argv)
{
    const char *tun = NULL, *server_s = NULL, *up = "0 0 0 0 0 0 0", *down = "0 0 0 0 0 0 0";
    int rt = 0;
    uint32_t server;
    struct ifreq ifr;
    static unsigned char buf[MAX_PKT];

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tun")) tun = argv[i + 1];
        else if (!strcmp(argv[i], "--server")) server_s = argv[i + 1];
        else if (!strcmp(argv[i], "--up")) up = argv[i + 1];
        else if (!strcmp(argv[i], "--down")) down = argv[i + 1];
        else if (!strcmp(argv[i], "--seed")) rng_state ^= strtoull(argv[i + 1], NULL, 10) * 0x2545F4914F6CDD1DULL;
        else if (!strcmp(argv[i], "--stats")) stats_path = argv[i + 1];
        else if (!strcmp(argv[i], "--rt")) rt = atoi(argv[i + 1]);
        else { fprintf(stderr, "netpath: unknown option %s\n", argv[i]); return 2; }
    }
    if (!rng_state)
        rng_state = 1;
    if (!tun || strlen(tun) >= IFNAMSIZ || !server_s || inet_pton(AF_INET, server_s, &server) != 1) {
        fprintf(stderr, "netpath: --tun NAME and --server IPv4 are required\n");
        return 2;
    }
    if (parse_dir(&dirs[0], up) || parse_dir(&dirs[1], down)) {
        fprintf(stderr, "netpath: bad --up/--down (7 numbers: delay_us jitter_us loss_ppm ge_p ge_r ge_bad reorder)\n");
        return 2;
    }
    heap = calloc(MAX_QUEUED, sizeof(*heap));
    if (!heap)
        return 1;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        perror("netpath: /dev/net/tun");
        return 1;
    }
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, tun, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror("netpath: TUNSETIFF");
        return 1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    prctl(PR_SET_TIMERSLACK, 1UL);
    if (rt > 0) {
        struct sched_param sp = {.sched_priority = rt};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
            fprintf(stderr, "netpath: SCHED_FIFO not granted (%s); timing may be less exact\n", strerror(errno));
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("ready\n");
    fflush(stdout);

    while (!want_exit) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        struct timespec to, *top = NULL;
        uint64_t t = now_ns();
        while (heap_n && heap[0].release <= t) {
            struct pkt p = heap_pop();
            if (write(fd, p.data, p.len) == (ssize_t)p.len) {
                p.d->sent++;
                p.d->bytes += p.len;
            }
            free(p.data);
        }
        if (want_stats) {
            want_stats = 0;
            write_stats();
        }
        if (heap_n) {
            uint64_t wait = heap[0].release - t;
            to.tv_sec = wait / 1000000000ULL;
            to.tv_nsec = wait % 1000000000ULL;
            top = &to;
        }
        int r = ppoll(&pfd, 1, top, NULL);
        if (r < 0 && errno != EINTR) {
            perror("netpath: ppoll");
            break;
        }
        if (r > 0 && (pfd.revents & POLLIN)) {
            for (int i = 0; i < 256; i++) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n <= 0)
                    break;
                take(fd, buf, n, server);
            }
        }
    }
    write_stats();
    return 0;
}
"""
