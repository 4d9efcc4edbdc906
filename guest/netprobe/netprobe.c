/* netprobe - ICMP echo from inside the test guest, for ferry-detect's
 * local detection (docs/detection.md).
 *
 *   netprobe ADDR INTERVAL_MS
 *
 * Sends one echo request to the IPv4 address ADDR every INTERVAL_MS
 * milliseconds (a raw socket: the guest runs it as root) and prints one
 * line per probe on stdout once its fate is known (replies as they come,
 * losses when they time out):
 *
 *   netprobe: seq=N t=T rtt_us=R    the reply came back after R us
 *   netprobe: seq=N t=T lost        no reply within NETPROBE_TIMEOUT_MS
 *
 * T is the send time in ms of the guest's CLOCK_MONOTONIC. A line is
 * written with one write(2), so it is never split on the console.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NETPROBE_TIMEOUT_MS 2000
#define WINDOW 256 /* probes in flight at most: timeout / interval */
#define ID 0x4e50  /* "NP" */

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint16_t csum(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (n & 1)
		s += (uint32_t)b[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return htons((uint16_t)~s);
}

static void say(const char *fmt, ...)
{
	char line[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(line) && write(1, line, (size_t)n) < 0)
		exit(1);
}

int main(int argc, char **argv)
{
	struct sockaddr_in to = { .sin_family = AF_INET };
	uint64_t sent_us[WINDOW] = { 0 };
	uint8_t got[WINDOW] = { 0 };
	uint32_t next = 0, oldest = 0; /* seq to send; seq not yet reported */
	uint64_t interval_us, next_send;
	long iv;
	int fd;

	if (argc != 3 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 ||
	    (iv = strtol(argv[2], NULL, 10)) < 10 || iv > 10000) {
		fprintf(stderr, "usage: netprobe IPV4 INTERVAL_MS(10..10000)\n");
		return 2;
	}
	interval_us = (uint64_t)iv * 1000u;
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (fd < 0) {
		fprintf(stderr, "netprobe: socket: %s\n", strerror(errno));
		return 1;
	}
	next_send = now_us();
	for (;;) {
		uint64_t t = now_us();
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int wait_ms;

		if (t >= next_send) {
			struct icmphdr h = { .type = ICMP_ECHO };
			uint32_t slot = next % WINDOW;

			if (next - oldest >= WINDOW) { /* cannot happen: timeout */
				oldest++;
				continue;
			}
			h.un.echo.id = htons(ID);
			h.un.echo.sequence = htons((uint16_t)next);
			h.checksum = csum(&h, sizeof(h));
			sent_us[slot] = t;
			got[slot] = 0;
			sendto(fd, &h, sizeof(h), 0, (struct sockaddr *)&to,
			       sizeof(to));
			next++;
			next_send += interval_us;
			if (next_send < t) /* stopped for a while: no burst */
				next_send = t + interval_us;
		}
		/* retire answered probes; report timed-out ones as lost */
		while (oldest != next) {
			uint32_t slot = oldest % WINDOW;

			if (got[slot]) {
				oldest++;
				continue;
			}
			if (now_us() - sent_us[slot] <
			    NETPROBE_TIMEOUT_MS * 1000u)
				break;
			say("netprobe: seq=%u t=%llu lost\n", oldest,
			    (unsigned long long)(sent_us[slot] / 1000u));
			oldest++;
		}
		t = now_us();
		wait_ms = next_send > t ? (int)((next_send - t) / 1000u) + 1 : 0;
		if (poll(&pfd, 1, wait_ms) == 1) {
			uint8_t buf[1500];
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			size_t hl;
			struct icmphdr r;
			uint32_t seq;

			if (n < (ssize_t)sizeof(struct iphdr))
				continue;
			hl = (size_t)(buf[0] & 0x0f) * 4u;
			if (hl < 20 || (size_t)n < hl + sizeof(r))
				continue;
			memcpy(&r, buf + hl, sizeof(r));
			if (r.type != ICMP_ECHOREPLY || ntohs(r.un.echo.id) != ID)
				continue;
			/* the 16-bit sequence of a probe still in flight */
			seq = oldest + (uint16_t)(ntohs(r.un.echo.sequence) -
						  (uint16_t)oldest);
			if (seq >= next || got[seq % WINDOW])
				continue;
			got[seq % WINDOW] = 1;
			say("netprobe: seq=%u t=%llu rtt_us=%llu\n", seq,
			    (unsigned long long)(sent_us[seq % WINDOW] / 1000u),
			    (unsigned long long)(now_us() -
						 sent_us[seq % WINDOW]));
		}
	}
}
