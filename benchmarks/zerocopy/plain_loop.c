// SPDX-License-Identifier: GPL-3.0-or-later
/* The reference for zerocopy_bench.py's C-loop comparison: the plainest TCP send and
 * receive loops, nothing else (no options, no counters but bytes).
 *
 *   plain_loop recv ADDR      prints "listening PORT", then "BYTES SECONDS" at EOF
 *   plain_loop send ADDR PORT SIZE SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (argc < 3 || inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1)
		return 64;
	if (argv[1][0] == 'r') {
		static char buf[1 << 20];
		unsigned long long bytes = 0;
		double t0;
		ssize_t n;
		int c;

		if (bind(fd, (struct sockaddr *)&sa, len) || listen(fd, 1) ||
		    getsockname(fd, (struct sockaddr *)&sa, &len))
			return 1;
		printf("listening %d\n", ntohs(sa.sin_port));
		fflush(stdout);
		c = accept(fd, NULL, NULL);
		t0 = now();
		while ((n = recv(c, buf, sizeof(buf), 0)) > 0)
			bytes += n;
		printf("%llu %.6f\n", bytes, now() - t0);
		return 0;
	}
	if (argc < 6)
		return 64;
	{
		int size = atoi(argv[4]);
		char *buf = calloc(1, size);
		double end;

		sa.sin_port = htons(atoi(argv[3]));
		if (!buf || connect(fd, (struct sockaddr *)&sa, len))
			return 1;
		end = now() + atof(argv[5]);
		while (now() < end)
			if (send(fd, buf, size, 0) < 0)
				return 1;
		close(fd);
	}
	return 0;
}
