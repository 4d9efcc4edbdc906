/* probe.c - ICMP echo and the packet listener, in the observer's network
 * namespace (ferry-detect's I/O; detect_int.h). */
#define _GNU_SOURCE
#include "detect_int.h"
#include "netdev.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t ts_us(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000u + (uint64_t)ts->tv_nsec / 1000u;
}

uint64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts_us(&ts);
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

int probe_open(const char *ns, struct probe_sock *ps, struct ferr *err)
{
	struct ferr e2;
	int one = 1;

	/* unprivileged ICMP datagram sockets when the namespace allows
	 * them (net.ipv4.ping_group_range), else a raw socket */
	ps->raw = false;
	ps->fd = netns_socket(ns, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC |
					     SOCK_NONBLOCK, IPPROTO_ICMP, &e2);
	if (ps->fd < 0) {
		ps->raw = true;
		ps->fd = netns_socket(ns, AF_INET, SOCK_RAW | SOCK_CLOEXEC |
						     SOCK_NONBLOCK,
				      IPPROTO_ICMP, err);
		if (ps->fd < 0)
			return ferr_wrap(err, "ICMP socket (datagram: %s)",
					 e2.msg);
	}
	/* kernel receive times: replies are timed even if the loop is late */
	setsockopt(ps->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	ps->id = (uint16_t)(getpid() & 0xffff);
	return 0;
}

int probe_send(struct probe_sock *ps, uint32_t addr, uint16_t seq)
{
	struct sockaddr_in to = { .sin_family = AF_INET };
	struct icmphdr h;

	memset(&h, 0, sizeof(h));
	h.type = ICMP_ECHO;
	to.sin_addr.s_addr = addr;
	h.un.echo.id = htons(ps->id);
	h.un.echo.sequence = htons(seq);
	h.checksum = csum(&h, sizeof(h));
	return sendto(ps->fd, &h, sizeof(h), 0, (struct sockaddr *)&to,
		      sizeof(to)) == (ssize_t)sizeof(h)
		       ? 0
		       : -1;
}

int probe_recv(struct probe_sock *ps, uint32_t *addr, uint16_t *seq,
	       uint64_t *at_us)
{
	uint8_t buf[1500], cbuf[256];
	struct sockaddr_in from;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof(from),
			     .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct icmphdr h;
	size_t off = 0;
	ssize_t n;

	for (;;) {
		n = recvmsg(ps->fd, &mh, 0);
		if (n < 0)
			return errno == EINTR ? 1 : 0;
		if (ps->raw) {
			if (n < 20)
				continue;
			off = (size_t)(buf[0] & 0x0f) * 4u;
			if (off < 20)
				continue;
		}
		if ((size_t)n < off + sizeof(h))
			continue;
		memcpy(&h, buf + off, sizeof(h));
		if (h.type != ICMP_ECHOREPLY ||
		    (ps->raw && ntohs(h.un.echo.id) != ps->id))
			continue;
		*addr = from.sin_addr.s_addr;
		*seq = ntohs(h.un.echo.sequence);
		*at_us = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
		     c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET &&
			    c->cmsg_type == SO_TIMESTAMPNS &&
			    c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
				struct timespec ts;

				memcpy(&ts, CMSG_DATA(c), sizeof(ts));
				*at_us = ts_us(&ts);
			}
		return 2;
	}
}

/* Only ARP, RARP and VLAN-tagged frames reach the socket (a flood on the
 * link never does). */
static struct sock_filter announce_only[] = {
	BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12), /* the ethertype */
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_ARP, 3, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_RARP, 2, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_8021Q, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, 0),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
};

int packet_open(const char *ns, const char *ifname, struct ferr *err)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(ETH_P_ALL) };
	struct sock_fprog prog = {
		.len = sizeof(announce_only) / sizeof(announce_only[0]),
		.filter = announce_only,
	};
	int one = 1, fd;

	fd = netns_socket(ns, AF_PACKET, SOCK_RAW | SOCK_CLOEXEC |
						 SOCK_NONBLOCK,
			  htons(ETH_P_ALL), err);
	if (fd < 0)
		return -1;
	/* the interface index is looked up in the socket's namespace */
	{
		struct ifreq ifr;

		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
		if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
			ferr_set(err, FERR_NOT_FOUND, "interface %s: %s",
				 ifname, strerror(errno));
			close(fd);
			return -1;
		}
		sll.sll_ifindex = ifr.ifr_ifindex;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog,
		       sizeof(prog)) < 0 ||
	    bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		ferr_set(err, FERR_IO, "bind to %s: %s", ifname,
			 strerror(errno));
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	return fd;
}

int packet_recv(int fd, struct frame_info *fi, uint64_t *at_us)
{
	uint8_t buf[2048], cbuf[256];
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };

	for (;;) {
		ssize_t n = recvmsg(fd, &mh, 0);

		if (n < 0)
			return errno == EINTR ? 1 : 0;
		if (frame_parse(buf, (size_t)n, fi) == FRAME_OTHER)
			continue;
		*at_us = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
		     c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET &&
			    c->cmsg_type == SO_TIMESTAMPNS &&
			    c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
				struct timespec ts;

				memcpy(&ts, CMSG_DATA(c), sizeof(ts));
				*at_us = ts_us(&ts);
			}
		return 2;
	}
}
