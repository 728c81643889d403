// nsbench: one tiny tool that drives TCP and Unix domain stream sockets identically, for
// benchmarks/shm_path_bench.py (sockperf 3.7 and iperf3 have no Unix-socket mode, wrk neither).
//
//   nsbench server ADDR                          echo ('P' connections) or sink ('B')
//   nsbench pp   ADDR -c CONNS -m SIZE -t SECS   ping-pong: CONNS connections, one message
//                                                of SIZE bytes in flight on each
//   nsbench http ADDR -c CONNS -t SECS -u PATH   keep-alive GET, one request in flight per
//                                                connection (a wrk stand-in that can do UDS)
//   nsbench bulk ADDR -c CONNS -m SIZE -t SECS   one-way stream; throughput is counted where
//                                                the bytes arrive (the server reports them)
//
// ADDR is tcp:HOST:PORT or unix:PATH.  Everything is one thread with epoll on each side, so
// the TCP and the Unix arms differ only in the socket family.  Clients print one JSON line.
// Build: gcc -O2 -o nsbench nsbench.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXEV 512
#define WARMUP_S 0.3

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_unix;
static struct sockaddr_storage addr;
static socklen_t addrlen;

static void parse_addr(const char *a)
{
    memset(&addr, 0, sizeof(addr));
    if (!strncmp(a, "unix:", 5)) {
        struct sockaddr_un *u = (struct sockaddr_un *)&addr;
        is_unix = 1;
        u->sun_family = AF_UNIX;
        snprintf(u->sun_path, sizeof(u->sun_path), "%s", a + 5);
        addrlen = sizeof(*u);
    } else if (!strncmp(a, "tcp:", 4)) {
        char host[128];
        const char *colon = strrchr(a + 4, ':');
        if (!colon || colon - (a + 4) >= (long)sizeof(host))
            die("address");
        memcpy(host, a + 4, colon - (a + 4));
        host[colon - (a + 4)] = 0;
        struct sockaddr_in *s4 = (struct sockaddr_in *)&addr;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&addr;
        if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons(atoi(colon + 1));
            addrlen = sizeof(*s4);
        } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(atoi(colon + 1));
            addrlen = sizeof(*s6);
        } else {
            fprintf(stderr, "bad host %s\n", host);
            exit(2);
        }
    } else {
        fprintf(stderr, "address must be tcp:HOST:PORT or unix:PATH\n");
        exit(2);
    }
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void nodelay(int fd)
{
    int one = 1;
    if (!is_unix)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Write all of buf; on a non-blocking fd, wait in select() while the socket is full.
static int write_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                fd_set ws;
                FD_ZERO(&ws);
                if (fd < FD_SETSIZE) {
                    FD_SET(fd, &ws);
                    select(fd + 1, NULL, &ws, NULL, NULL);
                }
                continue;
            }
            return -1;
        }
        buf += w;
        n -= w;
    }
    return 0;
}

// ------------------------------------------------------------------------------ server
struct sconn {
    char mode;          // 0 until the first byte, then 'P' or 'B'
    uint64_t bytes;
};

static int server(void)
{
    signal(SIGPIPE, SIG_IGN);
    int lst = socket(addr.ss_family, SOCK_STREAM, 0);
    if (lst < 0)
        die("socket");
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (is_unix)
        unlink(((struct sockaddr_un *)&addr)->sun_path);
    if (bind(lst, (struct sockaddr *)&addr, addrlen) < 0)
        die("bind");
    if (listen(lst, 4096) < 0)
        die("listen");
    nonblock(lst);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lst};
    epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev);
    int cap = 1024;
    struct sconn *cs = calloc(cap, sizeof(*cs));
    static char buf[1 << 18];
    struct epoll_event evs[MAXEV];
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, MAXEV, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lst) {
                int c;
                while ((c = accept4(lst, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= cap) {
                        int ncap = c * 2;
                        cs = realloc(cs, ncap * sizeof(*cs));
                        memset(cs + cap, 0, (ncap - cap) * sizeof(*cs));
                        cap = ncap;
                    }
                    memset(&cs[c], 0, sizeof(cs[c]));
                    nodelay(c);
                    struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof(buf));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0) {
                    if (cs[fd].mode == 'B') {
                        uint64_t b = cs[fd].bytes;
                        write_all(fd, (char *)&b, sizeof(b));
                    }
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                    break;
                }
                char *p = buf;
                if (!cs[fd].mode) {
                    cs[fd].mode = buf[0];
                    p++;
                    r--;
                }
                if (cs[fd].mode == 'P') {
                    if (r > 0 && write_all(fd, p, r) < 0) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                        close(fd);
                        break;
                    }
                } else {
                    cs[fd].bytes += r;
                }
                if (cs[fd].mode == 'P')
                    break;  // one message at a time: back to epoll, like a request server
            }
        }
    }
    return 0;
}

// ------------------------------------------------------------------------------ clients
static int connect_one(char mode)
{
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0)
        die("connect");
    nodelay(fd);
    if (mode && write_all(fd, &mode, 1) < 0)
        die("write");
    nonblock(fd);
    return fd;
}

struct cconn {
    int fd;
    size_t got, want;   // pp: bytes of the reply so far / expected; http: parsed length
    double t0;
    char *rbuf;
    size_t rcap;
};

static uint32_t *samples;
static size_t nsamples, capsamples;

static void add_sample(double s)
{
    if (nsamples == capsamples) {
        capsamples = capsamples ? capsamples * 2 : 1 << 16;
        samples = realloc(samples, capsamples * sizeof(*samples));
        if (!samples)
            die("realloc");
    }
    double ns = s * 1e9;
    samples[nsamples++] = ns > 4e9 ? 4000000000u : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double q)
{
    if (!nsamples)
        return 0;
    size_t i = (size_t)(q * (nsamples - 1) + 0.5);
    return samples[i] / 1000.0;
}

// http: is the response in c->rbuf complete?  Sets c->want once the header is parsed.
static int http_done(struct cconn *c)
{
    if (!c->want) {
        char *end = memmem(c->rbuf, c->got, "\r\n\r\n", 4);
        if (!end)
            return 0;
        size_t hdr = end + 4 - c->rbuf;
        size_t clen = 0;
        for (char *l = c->rbuf; l < end; l++) {
            if ((l == c->rbuf || l[-1] == '\n') && !strncasecmp(l, "Content-Length:", 15)) {
                clen = strtoul(l + 15, NULL, 10);
                break;
            }
        }
        c->want = hdr + clen;
    }
    return c->got >= c->want;
}

static int pingpong(int http, int conns, size_t msize, double secs, const char *url)
{
    signal(SIGPIPE, SIG_IGN);
    char req[512];
    size_t reqlen;
    if (http) {
        reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", url);
    } else {
        if (msize > sizeof(req))
            msize = sizeof(req);
        memset(req, 'x', msize);
        reqlen = msize;
    }
    struct cconn *cs = calloc(conns, sizeof(*cs));
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = connect_one(http ? 0 : 'P');
        cs[i].rcap = http ? 1 << 16 : msize;
        cs[i].rbuf = malloc(cs[i].rcap);
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
    }
    double start = now(), mstart = start + WARMUP_S, end = mstart + secs;
    for (int i = 0; i < conns; i++) {
        cs[i].t0 = now();
        if (write_all(cs[i].fd, req, reqlen) < 0)
            die("write");
    }
    long errors = 0;
    int open = conns;
    struct epoll_event evs[MAXEV];
    double t = now();
    while (open > 0) {
        int n = epoll_wait(ep, evs, MAXEV, 1000);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int k = 0; k < n; k++) {
            struct cconn *c = &cs[evs[k].data.u32];
            ssize_t r = read(c->fd, c->rbuf + c->got, c->rcap - c->got);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                open--;
                continue;
            }
            c->got += r;
            int done = http ? http_done(c) : c->got >= msize;
            if (!done)
                continue;
            t = now();
            if (t >= mstart && t < end)
                add_sample(t - c->t0);
            c->got = 0;
            c->want = 0;
            if (t >= end) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                open--;
                continue;
            }
            c->t0 = t;
            if (write_all(c->fd, req, reqlen) < 0)
                die("write");
        }
        if (now() > end + 10)
            break;  // a connection that never answers: give up, report what we have
    }
    double mean = 0;
    for (size_t i = 0; i < nsamples; i++)
        mean += samples[i];
    mean = nsamples ? mean / nsamples / 1000.0 : 0;
    qsort(samples, nsamples, sizeof(*samples), cmp_u32);
    printf("{\"mode\":\"%s\",\"family\":\"%s\",\"conns\":%d,\"msg_size\":%zu,\"seconds\":%.3f,"
           "\"ops\":%zu,\"ops_per_s\":%.1f,\"rtt_mean_us\":%.3f,\"rtt_p50_us\":%.3f,"
           "\"rtt_p90_us\":%.3f,\"rtt_p99_us\":%.3f,\"rtt_p999_us\":%.3f,\"rtt_max_us\":%.3f,"
           "\"errors\":%ld}\n",
           http ? "http" : "pp", is_unix ? "unix" : "tcp", conns, reqlen, secs, nsamples,
           nsamples / secs, mean, pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1.0), errors);
    return 0;
}

static int bulk(int conns, size_t msize, double secs)
{
    signal(SIGPIPE, SIG_IGN);
    char *buf = malloc(msize);
    memset(buf, 'b', msize);
    int *fds = calloc(conns, sizeof(int));
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        fds[i] = connect_one('B');
        struct epoll_event e = {.events = EPOLLOUT, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
    }
    uint64_t sent = 0;
    struct epoll_event evs[MAXEV];
    double t0 = now(), end = t0 + secs, t;
    while ((t = now()) < end) {
        int n = epoll_wait(ep, evs, MAXEV, 100);
        for (int k = 0; k < n; k++) {
            ssize_t w = write(fds[evs[k].data.u32], buf, msize);
            if (w > 0)
                sent += w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                die("write");
        }
    }
    double tstop = now();
    // Half-close; each server connection answers with the bytes it has read once it
    // has read everything: the receive side's count, and the time the receiver caught up.
    uint64_t recvd = 0;
    int lost = 0, lost_errno = 0;
    long eagain = 0;
    for (int i = 0; i < conns; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        fcntl(fds[i], F_SETFL, fl & ~O_NONBLOCK);
        shutdown(fds[i], SHUT_WR);
    }
    for (int i = 0; i < conns; i++) {
        uint64_t b = 0;
        size_t got = 0;
        while (got < sizeof(b)) {
            ssize_t r = read(fds[i], (char *)&b + got, sizeof(b) - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno == EAGAIN) {
                // A blocking socket on a sockmap (tcp_bpf_recvmsg) can return EAGAIN when
                // woken without data: count it and wait again.
                struct pollfd pfd = {.fd = fds[i], .events = POLLIN};
                eagain++;
                poll(&pfd, 1, 1000);
                continue;
            }
            if (r <= 0) {
                lost_errno = r < 0 ? errno : 0;
                break;
            }
            got += r;
        }
        if (got < sizeof(b))
            lost++;  // no count came back: that connection's bytes are not counted
        recvd += b;
        close(fds[i]);
    }
    double tdone = now();
    printf("{\"mode\":\"bulk\",\"family\":\"%s\",\"conns\":%d,\"msg_size\":%zu,\"seconds\":%.3f,"
           "\"sent_bytes\":%llu,\"recv_bytes\":%llu,\"sender_gbps\":%.3f,\"receiver_gbps\":%.3f,"
           "\"drain_s\":%.4f,\"lost_conns\":%d,\"lost_errno\":%d,\"blocking_eagain\":%ld}\n",
           is_unix ? "unix" : "tcp", conns, msize, tstop - t0, (unsigned long long)sent,
           (unsigned long long)recvd, sent * 8 / (tstop - t0) / 1e9,
           recvd * 8 / (tdone - t0) / 1e9, tdone - tstop, lost, lost_errno, eagain);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: nsbench server|pp|http|bulk ADDR [-c N] [-m SIZE] [-t SECS] [-u URL]\n");
        return 2;
    }
    const char *mode = argv[1];
    parse_addr(argv[2]);
    int conns = 1;
    size_t msize = 64;
    double secs = 3;
    const char *url = "/";
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-c"))
            conns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-m"))
            msize = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "-t"))
            secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-u"))
            url = argv[i + 1];
    }
    if (!strcmp(mode, "server"))
        return server();
    if (!strcmp(mode, "pp"))
        return pingpong(0, conns, msize, secs, url);
    if (!strcmp(mode, "http"))
        return pingpong(1, conns, msize, secs, url);
    if (!strcmp(mode, "bulk"))
        return bulk(conns, msize, secs);
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
