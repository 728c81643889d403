// SPDX-License-Identifier: GPL-3.0-or-later
/* zc_bench: the sender and receiver behind netstack.tuning's zerocopy_test module.
 *
 * One process per side, so that the module measures the kernel and not an interpreter:
 *
 *   zc_bench probe
 *       what this kernel offers: SO_ZEROCOPY, io_uring with IORING_OP_SEND_ZC, and the
 *       lightweight SCM_ZC_NOTIFICATION control message (an unmerged patch series).
 *   zc_bench recv -P tcp|udp -a ADDR [-p PORT] [-c CPU] [-N NETNS] [-t TIMEOUT]
 *       binds ADDR:PORT (0: any free port), prints "listening PORT", counts what arrives
 *       until the sender closes (TCP) or sends its end marker (UDP), prints one JSON line.
 *   zc_bench send -P tcp|udp -a ADDR -p PORT -s SIZE -m MODE -d SECONDS
 *                 [-b BATCH] [-q DEPTH] [-c CPU] [-N NETNS]
 *       sends SIZE-byte messages for SECONDS, waits for every zerocopy completion, prints
 *       one JSON line.  MODE is one of
 *         copy          send(2), the kernel copies the payload
 *         msg_zerocopy  send(2) with MSG_ZEROCOPY; completions read from the socket error
 *                       queue (MSG_ERRQUEUE) whenever BATCH sends are outstanding
 *         io_uring      IORING_OP_SEND, DEPTH sends in flight (copies, io_uring's batching)
 *         io_uring_zc   IORING_OP_SEND_ZC, DEPTH sends in flight; a notification CQE per send
 *         zc_cmsg       MSG_ZEROCOPY with completions returned in sendmsg's own control
 *                       message (SCM_ZC_NOTIFICATION); refused with status "unsupported"
 *                       where the kernel rejects that control message
 *
 * The payload buffer is reused for every send, also while a zerocopy send still holds its
 * pages: a throughput test does not check data.  Output is JSON on stdout; exit status 0
 * ok, 2 error (with "where" and "errno"), 3 unsupported.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

/* "net: A lightweight zero-copy notification mechanism for MSG_ZEROCOPY" (ByteDance,
 * netdev, 2024, not merged): the cmsg carries an array of these, filled in by the kernel. */
#define ZC_SCM_NOTIFICATION 78
#define ZC_INFO_MAX 16
struct zc_info_elem {
	uint32_t lo;
	uint32_t hi;
	uint8_t zerocopy;
};

#define UDP_MAX_PAYLOAD 65507
/* After the last send, completions are awaited while they keep coming: until none came
 * for DRAIN_IDLE_SECONDS (fragmented UDP over veth can lose a few for good), at most
 * DRAIN_MAX_SECONDS.  A fixed 2 s lost late completions on a busy host (a CPU hog beside
 * the receiver) and reported them missing; so did a 2 s idle limit (suite run 7) and a 5 s
 * one (run 8: 6 of 69,971 io_uring_zc notifications on loopback TCP 4 KiB).  Waiting costs
 * nothing when every completion is in. */
#define DRAIN_IDLE_SECONDS 15.0
#define DRAIN_MAX_SECONDS 30.0

struct opts {
	const char *role, *proto, *addr, *mode, *netns;
	int port, size, batch, depth, cpu;
	double duration, timeout;
};

struct stats {
	uint64_t bytes, sends, short_sends, completions, notifications, errqueue_reads, copied, enobufs;
	int copied_known;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void cpu_times(double *user, double *sys)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
	*sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void fail(const char *where, int err)
{
	printf("{\"status\": \"error\", \"where\": \"%s\", \"errno\": %d, \"error\": \"%s\"}\n",
	       where, err, strerror(err));
	exit(2);
}

static void unsupported(const char *reason, int err)
{
	printf("{\"status\": \"unsupported\", \"errno\": %d, \"reason\": \"%s (%s)\"}\n",
	       err, reason, strerror(err));
	exit(3);
}

static void usage(void)
{
	fprintf(stderr, "usage: zc_bench probe | recv -P tcp|udp -a ADDR [-p PORT] | "
			"send -P tcp|udp -a ADDR -p PORT -s SIZE -m MODE -d SECONDS\n");
	exit(64);
}

/* Join a named network namespace and pin to a CPU, before any socket exists. */
static void place(const struct opts *o)
{
	if (o->netns) {
		int fd = open(o->netns, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			fail("netns", errno);
		close(fd);
	}
	if (o->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(o->cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			fail("cpu", errno);
	}
}

static socklen_t sockaddr_of(const char *addr, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		return sizeof(*in4);
	}
	if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		return sizeof(*in6);
	}
	fail("address", EINVAL);
	return 0;
}

static int is_tcp(const struct opts *o)
{
	return strcmp(o->proto, "tcp") == 0;
}

/* ------------------------------------------------------------------ receiver */

static int receiver(const struct opts *o)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(o->addr, o->port, &ss);
	int tcp = is_tcp(o), one = 1, big = 8 << 20, fd, cfd;
	size_t bufsz = tcp ? (1 << 20) : 65536;
	char *buf = malloc(bufsz);
	uint64_t bytes = 0, msgs = 0;
	double t0 = 0, t_last = 0, u0 = 0, s0 = 0, u1, s1;
	struct pollfd pfd;

	fd = socket(ss.ss_family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0 || !buf)
		fail("socket", errno);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (!tcp && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		fail("bind", errno);
	if (tcp && listen(fd, 1) < 0)
		fail("listen", errno);
	len = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &len);
	printf("listening %d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
	fflush(stdout);

	pfd.fd = fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, (int)(o->timeout * 1000)) <= 0)
		fail("wait for the sender", ETIMEDOUT);
	cfd = fd;
	if (tcp) {
		cfd = accept(fd, NULL, NULL);
		if (cfd < 0)
			fail("accept", errno);
	}
	cpu_times(&u0, &s0);
	t0 = t_last = now();
	for (;;) {
		ssize_t n;

		if (!tcp) {
			/* a lost end marker must not hang the receiver */
			pfd.fd = cfd;
			if (poll(&pfd, 1, msgs ? 1000 : (int)(o->timeout * 1000)) <= 0)
				break;
		}
		n = recv(cfd, buf, bufsz, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail("recv", errno);
		}
		if (n == 0)
			break;	/* TCP: the sender closed; UDP: the end marker */
		if (!tcp && !msgs) {
			cpu_times(&u0, &s0);
			t0 = now();
		}
		bytes += n;
		msgs++;
		t_last = now();
	}
	cpu_times(&u1, &s1);
	if (tcp)
		t_last = now();
	printf("{\"status\": \"ok\", \"role\": \"recv\", \"proto\": \"%s\", \"bytes\": %llu, \"msgs\": %llu, "
	       "\"wall_s\": %.6f, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f}\n",
	       o->proto, (unsigned long long)bytes, (unsigned long long)msgs, t_last - t0, u1 - u0, s1 - s0);
	return 0;
}

/* ------------------------------------------------------------------ MSG_ZEROCOPY */

/* Read every zerocopy notification queued on the socket's error queue; with wait_ms,
 * first wait that long for one to arrive.  Returns how many notifications were read. */
static int read_errqueue(int fd, struct stats *st, int wait_ms)
{
	int got = 0;

	if (wait_ms) {
		struct pollfd pfd = { .fd = fd, .events = 0 };

		poll(&pfd, 1, wait_ms);	/* POLLERR: the error queue is not empty */
	}
	for (;;) {
		char control[256];
		struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof(control) };
		struct cmsghdr *cm;

		if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return got;
			fail("recvmsg MSG_ERRQUEUE", errno);
		}
		st->errqueue_reads++;
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			struct sock_extended_err *ee;
			uint64_t n;

			if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
				continue;
			ee = (struct sock_extended_err *)CMSG_DATA(cm);
			if (ee->ee_origin != SO_EE_ORIGIN_ZEROCOPY || ee->ee_errno != 0)
				continue;
			/* one notification covers the range of send ids [ee_info, ee_data] */
			n = (uint32_t)(ee->ee_data - ee->ee_info) + 1;
			st->completions += n;
			st->notifications++;
			if (ee->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
				st->copied += n;
			got++;
		}
	}
}

static void drain_errqueue(int fd, struct stats *st)
{
	double start = now(), idle_until = start + DRAIN_IDLE_SECONDS;

	while (st->completions < st->sends && now() < idle_until && now() < start + DRAIN_MAX_SECONDS)
		if (read_errqueue(fd, st, 100))
			idle_until = now() + DRAIN_IDLE_SECONDS;
}

/* The lightweight notification: the kernel writes completed ranges into our cmsg. */
static int take_cmsg_notifications(struct zc_info_elem *elems, struct stats *st)
{
	int i, got = 0;

	for (i = 0; i < ZC_INFO_MAX; i++) {
		uint64_t n;

		if (elems[i].zerocopy > 1)
			continue;	/* still our sentinel: not written */
		n = (uint32_t)(elems[i].hi - elems[i].lo) + 1;
		st->completions += n;
		st->notifications++;
		if (!elems[i].zerocopy)
			st->copied += n;
		got++;
	}
	return got;
}

static void send_zerocopy(int fd, const struct opts *o, char *buf, double end, struct stats *st, int cmsg)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct zc_info_elem) * ZC_INFO_MAX)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = o->size };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct zc_info_elem *elems = NULL;
	int one = 1;

	if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) < 0)
		unsupported("setsockopt SO_ZEROCOPY", errno);
	st->copied_known = 1;
	while (now() < end) {
		ssize_t n;

		if (cmsg) {
			struct cmsghdr *cm;

			msg.msg_control = control.buf;
			msg.msg_controllen = sizeof(control.buf);
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = ZC_SCM_NOTIFICATION;
			cm->cmsg_len = CMSG_LEN(sizeof(struct zc_info_elem) * ZC_INFO_MAX);
			elems = (struct zc_info_elem *)CMSG_DATA(cm);
			memset(elems, 0xff, sizeof(struct zc_info_elem) * ZC_INFO_MAX);
		}
		n = sendmsg(fd, &msg, MSG_ZEROCOPY);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {	/* optmem full of pending notifications */
				st->enobufs++;
				read_errqueue(fd, st, 10);
				continue;
			}
			if (cmsg && errno == EINVAL && st->sends == 0)
				unsupported("the kernel rejects SCM_ZC_NOTIFICATION: the lightweight notification "
					    "series is not in this kernel", errno);
			fail("sendmsg MSG_ZEROCOPY", errno);
		}
		st->sends++;
		st->bytes += n;
		if (n < o->size)
			st->short_sends++;
		if (cmsg)
			take_cmsg_notifications(elems, st);
		else if (st->sends - st->completions >= (uint64_t)o->batch)
			read_errqueue(fd, st, 0);
	}
	drain_errqueue(fd, st);
}

/* ------------------------------------------------------------------ io_uring SEND(_ZC) */

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int ring_setup(struct ring *r, unsigned entries)
{
	struct io_uring_params p;
	size_t sq_len, cq_len;
	char *sq, *cq;

	memset(&p, 0, sizeof(p));
	r->fd = syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		return -errno;
	sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP)
		sq_len = cq_len = sq_len > cq_len ? sq_len : cq_len;
	sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		return -errno;
	cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			  IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			return -errno;
	}
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		return -errno;
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

/* 1: IORING_OP_SEND_ZC is supported, 0: not, -errno: io_uring itself is unavailable. */
static int ring_has_send_zc(void)
{
	struct ring r;
	struct io_uring_probe *probe;
	size_t len = sizeof(*probe) + 256 * sizeof(struct io_uring_probe_op);
	int err = ring_setup(&r, 4), ok = 0;

	if (err)
		return err;
	probe = calloc(1, len);
	if (probe && syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_PROBE, probe, 256) == 0)
		ok = probe->ops_len > IORING_OP_SEND_ZC &&
		     (probe->ops[IORING_OP_SEND_ZC].flags & IO_URING_OP_SUPPORTED);
	free(probe);
	close(r.fd);
	return ok;
}

/* DEPTH sends in flight, submitted and reaped with one io_uring_enter per round; with zc,
 * IORING_OP_SEND_ZC and its notification CQEs, else IORING_OP_SEND. */
static void send_uring(int fd, const struct opts *o, char *buf, double end, struct stats *st, int zc)
{
	struct ring r;
	unsigned inflight = 0, notifs = 0, usage = zc ? IORING_SEND_ZC_REPORT_USAGE : 0;
	double idle_until = end + DRAIN_IDLE_SECONDS;
	uint64_t seq = 0;
	int err = ring_has_send_zc();

	if (err < 0)
		unsupported("io_uring is not available", -err);
	if (!err && zc)
		unsupported("io_uring has no IORING_OP_SEND_ZC on this kernel", EOPNOTSUPP);
	err = ring_setup(&r, 2 * o->depth);
	if (err)
		fail("io_uring_setup", -err);
	st->copied_known = zc;
	for (;;) {
		unsigned submit = 0, head, tail;
		int more = now() < end;

		if (!more && !inflight && !notifs)
			break;
		if (!more && (now() > idle_until || now() > end + DRAIN_MAX_SECONDS))
			break;
		tail = *r.sq_tail;
		while (more && inflight < (unsigned)o->depth) {
			unsigned idx = tail & *r.sq_mask;
			struct io_uring_sqe *sqe = &r.sqes[idx];

			memset(sqe, 0, sizeof(*sqe));
			sqe->opcode = zc ? IORING_OP_SEND_ZC : IORING_OP_SEND;
			sqe->fd = fd;
			sqe->addr = (uintptr_t)buf;
			sqe->len = o->size;
			sqe->ioprio = usage;	/* the zerocopy flags live in ioprio */
			sqe->user_data = ++seq;
			r.sq_array[idx] = idx;
			tail++;
			inflight++;
			submit++;
		}
		__atomic_store_n(r.sq_tail, tail, __ATOMIC_RELEASE);
		if (syscall(__NR_io_uring_enter, r.fd, submit, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0 &&
		    errno != EINTR)
			fail("io_uring_enter", errno);
		head = *r.cq_head;
		if (!more && head != __atomic_load_n(r.cq_tail, __ATOMIC_ACQUIRE))
			idle_until = now() + DRAIN_IDLE_SECONDS;	/* still completing: keep waiting */
		while (head != __atomic_load_n(r.cq_tail, __ATOMIC_ACQUIRE)) {
			struct io_uring_cqe *cqe = &r.cqes[head & *r.cq_mask];

			if (cqe->flags & IORING_CQE_F_NOTIF) {
				notifs--;
				st->completions++;
				st->notifications++;
				if (usage && (cqe->res & IORING_NOTIF_USAGE_ZC_COPIED))
					st->copied++;
			} else {
				inflight--;
				if (cqe->flags & IORING_CQE_F_MORE)
					notifs++;
				if (cqe->res == -EINVAL && zc && usage && st->sends == 0) {
					usage = 0;	/* before 6.2: no usage report, so no copied count */
					st->copied_known = 0;
				} else if (cqe->res == -ENOBUFS) {
					st->enobufs++;
				} else if (cqe->res < 0) {
					fail(zc ? "IORING_OP_SEND_ZC" : "IORING_OP_SEND", -cqe->res);
				} else {
					st->sends++;
					st->bytes += cqe->res;
					if (cqe->res < o->size)
						st->short_sends++;
				}
			}
			head++;
		}
		__atomic_store_n(r.cq_head, head, __ATOMIC_RELEASE);
	}
	close(r.fd);
}

/* ------------------------------------------------------------------ sender */

static int sender(const struct opts *o)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(o->addr, o->port, &ss);
	int tcp = is_tcp(o), fd, i;
	char *buf;
	struct stats st;
	double t0, t1, end, u0, s0, u1, s1;

	if (o->size <= 0 || (!tcp && o->size > UDP_MAX_PAYLOAD))
		fail("size", EMSGSIZE);
	memset(&st, 0, sizeof(st));
	if (posix_memalign((void **)&buf, 4096, o->size))
		fail("malloc", ENOMEM);
	for (i = 0; i < o->size; i++)
		buf[i] = 'a' + i % 26;
	fd = socket(ss.ss_family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0)
		fail("socket", errno);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0)
		fail("connect", errno);

	cpu_times(&u0, &s0);
	t0 = now();
	end = t0 + o->duration;
	if (strcmp(o->mode, "copy") == 0) {
		while (now() < end) {
			ssize_t n = send(fd, buf, o->size, 0);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == ENOBUFS) {
					st.enobufs++;
					continue;
				}
				fail("send", errno);
			}
			st.sends++;
			st.bytes += n;
			if (n < o->size)
				st.short_sends++;
		}
	} else if (strcmp(o->mode, "msg_zerocopy") == 0) {
		send_zerocopy(fd, o, buf, end, &st, 0);
	} else if (strcmp(o->mode, "zc_cmsg") == 0) {
		send_zerocopy(fd, o, buf, end, &st, 1);
	} else if (strcmp(o->mode, "io_uring") == 0) {
		send_uring(fd, o, buf, end, &st, 0);
	} else if (strcmp(o->mode, "io_uring_zc") == 0) {
		send_uring(fd, o, buf, end, &st, 1);
	} else {
		fail("mode", EINVAL);
	}
	t1 = now();
	cpu_times(&u1, &s1);
	if (tcp) {
		close(fd);
	} else {
		for (i = 0; i < 10; i++) {	/* end markers: empty datagrams */
			send(fd, buf, 0, 0);
			usleep(2000);
		}
	}
	printf("{\"status\": \"ok\", \"role\": \"send\", \"proto\": \"%s\", \"mode\": \"%s\", \"size\": %d, "
	       "\"bytes\": %llu, \"sends\": %llu, \"short_sends\": %llu, \"wall_s\": %.6f, "
	       "\"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, \"completions\": %llu, \"notifications\": %llu, "
	       "\"errqueue_reads\": %llu, \"copied\": %llu, \"copied_known\": %s, \"enobufs\": %llu}\n",
	       o->proto, o->mode, o->size, (unsigned long long)st.bytes, (unsigned long long)st.sends,
	       (unsigned long long)st.short_sends, t1 - t0, u1 - u0, s1 - s0,
	       (unsigned long long)st.completions, (unsigned long long)st.notifications,
	       (unsigned long long)st.errqueue_reads, (unsigned long long)st.copied,
	       st.copied_known ? "true" : "false", (unsigned long long)st.enobufs);
	return 0;
}

/* ------------------------------------------------------------------ probe */

/* Does the kernel take SCM_ZC_NOTIFICATION?  One MSG_ZEROCOPY send over loopback without
 * the control message (must work), then one with it. */
static const char *probe_zc_cmsg(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	union {
		char buf[CMSG_SPACE(sizeof(struct zc_info_elem) * ZC_INFO_MAX)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = "x", .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	struct cmsghdr *cm;
	int lfd, fd, one = 1;
	const char *verdict;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || fd < 0 || bind(lfd, (struct sockaddr *)&sa, len) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) < 0 || connect(fd, (struct sockaddr *)&sa, len) < 0)
		return "error: no loopback TCP socket pair";
	if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) < 0)
		return "no: SO_ZEROCOPY is refused";
	if (send(fd, "x", 1, MSG_ZEROCOPY) != 1)
		return "error: a plain MSG_ZEROCOPY send failed";
	cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = ZC_SCM_NOTIFICATION;
	cm->cmsg_len = CMSG_LEN(sizeof(struct zc_info_elem) * ZC_INFO_MAX);
	memset(CMSG_DATA(cm), 0xff, sizeof(struct zc_info_elem) * ZC_INFO_MAX);
	if (sendmsg(fd, &msg, MSG_ZEROCOPY) == 1)
		verdict = "yes";
	else if (errno == EINVAL)
		verdict = "no: the kernel rejects the SCM_ZC_NOTIFICATION control message (EINVAL)";
	else
		verdict = "error: sendmsg with SCM_ZC_NOTIFICATION failed unexpectedly";
	close(fd);
	close(lfd);
	return verdict;
}

static int probe(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, zc, uring = ring_has_send_zc();

	zc = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0;
	printf("{\"status\": \"ok\", \"so_zerocopy\": %s, \"so_zerocopy_error\": \"%s\", "
	       "\"io_uring\": %s, \"io_uring_error\": \"%s\", \"io_uring_send_zc\": %s, \"zc_cmsg\": \"%s\"}\n",
	       zc ? "true" : "false", zc ? "" : strerror(errno),
	       uring >= 0 ? "true" : "false", uring >= 0 ? "" : strerror(-uring),
	       uring > 0 ? "true" : "false", probe_zc_cmsg());
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .proto = "tcp", .addr = "127.0.0.1", .mode = "copy", .batch = 32, .depth = 8,
			  .cpu = -1, .duration = 1.0, .timeout = 10.0 };
	int c;

	if (argc < 2)
		usage();
	o.role = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "P:a:p:s:m:d:b:q:c:N:t:")) != -1) {
		switch (c) {
		case 'P': o.proto = optarg; break;
		case 'a': o.addr = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 's': o.size = atoi(optarg); break;
		case 'm': o.mode = optarg; break;
		case 'd': o.duration = atof(optarg); break;
		case 'b': o.batch = atoi(optarg); break;
		case 'q': o.depth = atoi(optarg); break;
		case 'c': o.cpu = atoi(optarg); break;
		case 'N': o.netns = optarg; break;
		case 't': o.timeout = atof(optarg); break;
		default: usage();
		}
	}
	if (strcmp(o.proto, "tcp") && strcmp(o.proto, "udp"))
		usage();
	if (o.batch < 1 || o.depth < 1 || o.depth > 256)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(o.role, "probe") == 0)
		return probe();
	place(&o);
	if (strcmp(o.role, "recv") == 0)
		return receiver(&o);
	if (strcmp(o.role, "send") == 0)
		return sender(&o);
	usage();
	return 64;
}
