/* fence.c - the fence agent of a protected VM (docs/ha.md, "Lease rules").
 *
 * Self-fencing must not depend on ferryd staying alive: a ferryd killed
 * while its QEMU runs would otherwise let the lease expire under a running
 * VM, and the backup would start it a second time. So each protected VM
 * has an agent: ferryd itself, started again as `ferryd --ha-fence-agent
 * NAME` in a session of its own, holding a pidfd of the VM's QEMU and one
 * end of a socket pair. After every renewal of the owner lease ferryd
 * arms it with the deadline by which the next renewal must arrive; when
 * none arrives in time, or the socket ends because ferryd is gone, the
 * agent freezes QEMU with SIGSTOP and exits. It needs no monitor, no
 * network and no lock: nothing can hold it up. */
#define _GNU_SOURCE
#include "ha_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

#define AGENT_FD_CTL 3  /* the socket pair's end, in the agent */
#define AGENT_FD_QEMU 4 /* QEMU's pidfd, in the agent */
#define AGENT_FD_HIGH 64 /* file actions move the two through here */
#define AGENT_FIRST_ARM_MS 5000 /* the first ARM (sent before the spawn) */

int ha_fence_arm(struct ha_pv *pv, uint64_t deadline_ms)
{
	uint8_t m[HA_FENCE_MSG_LEN];

	if (pv->agent_fd < 0)
		return -1;
	ha_fence_encode(m, HA_FENCE_ARM, deadline_ms);
	if (send(pv->agent_fd, m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT) !=
	    (ssize_t)sizeof(m)) {
		/* its queue is full: it lives, but reads late (it freezes at
		 * an older deadline at worst) */
		if (errno == EAGAIN)
			return 0;
		/* the agent ended: it froze QEMU, or QEMU exited */
		close(pv->agent_fd);
		pv->agent_fd = -1;
		return -1;
	}
	return 0;
}

void ha_fence_stop(struct ha_pv *pv, bool disarm)
{
	uint8_t m[HA_FENCE_MSG_LEN];

	if (pv->agent_fd < 0)
		return;
	if (disarm) {
		ha_fence_encode(m, HA_FENCE_DISARM, 0);
		send(pv->agent_fd, m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	/* without DISARM the end of the socket freezes QEMU at once */
	close(pv->agent_fd);
	pv->agent_fd = -1;
}

/* A copy of fd at AGENT_FD_HIGH or above (close-on-exec). */
static int high(int fd)
{
	return fcntl(fd, F_DUPFD_CLOEXEC, AGENT_FD_HIGH);
}

int ha_fence_start(struct ha_pv *pv, uint64_t deadline_ms, struct ferr *err)
{
	char *argv[] = { "ferryd", HA_FENCE_AGENT_ARG, pv->name, NULL };
	int sv[2] = { -1, -1 }, pidfd = -1, ctl = -1, qfd = -1, rc = -1;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	pid_t pid;

	ha_fence_stop(pv, true);
	pidfd = pidfd_open(pv->pid, 0);
	/* the pidfd names this very process from now on: check it is the
	 * VM's QEMU after taking it */
	if (pidfd < 0 || !qemu_process_matches(pv->pid, pv->uuid)) {
		ferr_set(err, FERR_CONFLICT, "vm %s: no QEMU to guard (pid %d)",
			 pv->name, (int)pv->pid);
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
	    (ctl = high(sv[1])) < 0 || (qfd = high(pidfd)) < 0) {
		ferr_set(err, FERR_INTERNAL, "fence agent: %s", strerror(errno));
		goto out;
	}
	pv->agent_fd = sv[0];
	sv[0] = -1;
	/* queued before the agent runs: it is armed from its first read */
	if (ha_fence_arm(pv, deadline_ms) < 0) {
		ferr_set(err, FERR_INTERNAL, "fence agent: cannot arm it");
		goto out;
	}
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	posix_spawn_file_actions_adddup2(&fa, ctl, AGENT_FD_CTL);
	posix_spawn_file_actions_adddup2(&fa, qfd, AGENT_FD_QEMU);
	posix_spawn_file_actions_addclosefrom_np(&fa, AGENT_FD_QEMU + 1);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	/* its own session: it outlives ferryd, as QEMU does */
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID |
					      POSIX_SPAWN_SETSIGMASK |
					      POSIX_SPAWN_SETSIGDEF);
	rc = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (rc != 0) {
		ferr_set(err, FERR_INTERNAL, "cannot start the fence agent: %s",
			 strerror(rc));
		rc = -1;
		goto out;
	}
	pv->agent_pid = pid;
	rc = 0;
out:
	if (rc < 0)
		ha_fence_stop(pv, true);
	for (int i = 0; i < 2; i++)
		if (sv[i] >= 0)
			close(sv[i]);
	if (pidfd >= 0)
		close(pidfd);
	if (ctl >= 0)
		close(ctl);
	if (qfd >= 0)
		close(qfd);
	return rc;
}

/* ---- the agent's own process ---- */

static int freeze(const char *name, const char *why)
{
	if (pidfd_send_signal(AGENT_FD_QEMU, SIGSTOP, NULL, 0) < 0) {
		log_error("fence agent: vm %s: cannot freeze QEMU (%s): %s",
			  name, why, strerror(errno));
		return 1;
	}
	log_warn("fence agent: vm %s: QEMU frozen: %s", name, why);
	return 0;
}

int ha_fence_agent_main(int argc, char **argv)
{
	const char *name = argc > 2 ? argv[2] : "?";
	uint64_t deadline = now_ms() + AGENT_FIRST_ARM_MS;

	for (;;) {
		struct pollfd p[2] = { { .fd = AGENT_FD_CTL, .events = POLLIN },
				       { .fd = AGENT_FD_QEMU,
					 .events = POLLIN } };
		uint8_t m[HA_FENCE_MSG_LEN];
		uint64_t now = now_ms(), d;
		struct ferr err;
		uint16_t cmd;
		ssize_t n;

		if (now >= deadline)
			return freeze(name, "the owner lease was not renewed "
					    "in time");
		if (poll(p, 2, (int)(deadline - now < INT_MAX ? deadline - now
							      : INT_MAX)) < 0) {
			if (errno == EINTR)
				continue;
			return freeze(name, "poll failed");
		}
		if (p[1].revents)
			return 0; /* QEMU exited: nothing to guard */
		if (!p[0].revents)
			continue;
		n = recv(AGENT_FD_CTL, m, sizeof(m), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return freeze(name, "ferryd is gone");
		if (n != (ssize_t)sizeof(m) ||
		    ha_fence_decode(m, &cmd, &d, &err) < 0)
			return freeze(name, "a bad control message");
		if (cmd == HA_FENCE_DISARM)
			return 0;
		deadline = d;
	}
}
