/* outchan.c - the source's channels: the acceptor of the connections
 * QEMU opens to the migration's unix socket, and one relay thread per
 * channel to the destination's data plane (the destination's side is
 * inchan.c). */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHANNEL_DRAIN_MS 5000   /* let channels end by themselves */

struct chan_arg {
	struct mig *g;
	int fd;
	unsigned idx;
};

int mig_dial(struct mig *g, unsigned idx, struct mig_conn *c,
	     struct ferr *err)
{
	return dataplane_dial(g->m->client_ctx, g->m->cfg->migration_netns,
			      config_dataplane_addr(g->m->cfg), g->opts.to,
			      g->data_addr, g->data_port, g->opts.insecure,
			      g->plan.z, g->sid, g->key, (uint16_t)idx,
			      (uint16_t)g->nchan, c, err);
}

/* One channel: dial the destination (unless g->ready already holds it),
 * then relay until done. */
static void *chan_main(void *arg)
{
	struct chan_arg *a = arg;
	struct mig *g = a->g;
	struct mig_conn c = { .fd = -1 };
	struct ferr err = { 0 };
	int rc = 0;

	if (a->idx == 0 && g->ready.fd >= 0) {
		c = g->ready;
		g->ready = (struct mig_conn){ .fd = -1 };
	} else {
		rc = mig_dial(g, a->idx, &c, &err);
	}
	if (rc == 0)
		rc = relay_run(a->fd, &c, &g->relay_stop, &g->ctr, &err);
	if (rc < 0 && !atomic_load(&g->relay_stop))
		mig_rec_error(g, "channel %u: %s", a->idx, err.msg);
	conn_close(&c, rc == 0, &g->ctr);
	close(a->fd);
	free(a);
	return NULL;
}

/* Accept the nchan connections QEMU opens, in order, one thread each. */
static void *acceptor_main(void *arg)
{
	struct mig *g = arg;
	unsigned idx = 0;

	while (idx < g->nchan && !atomic_load(&g->relay_stop)) {
		struct pollfd pfd = { .fd = g->listen_fd, .events = POLLIN };
		struct chan_arg *a;
		int fd;

		if (poll(&pfd, 1, MIG_POLL_MS) <= 0)
			continue;
		fd = accept4(g->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		a = calloc(1, sizeof(*a));
		if (!a) {
			close(fd);
			break;
		}
		a->g = g;
		a->fd = fd;
		a->idx = idx;
		if (pthread_create(&g->chan_thread[g->nthreads], NULL,
				   chan_main, a) != 0) {
			mig_rec_error(g, "cannot start a channel thread");
			close(fd);
			free(a);
			break;
		}
		g->nthreads++;
		idx++;
	}
	return NULL;
}

int channels_start(struct mig *g, struct ferr *err)
{
	if (fmt_checked(g->out_sock, sizeof(g->out_sock), err, "socket path",
			"%s/run/%s.out", g->m->cfg->state_dir, g->id) < 0)
		return -1;
	g->nthreads = 0;
	atomic_store(&g->relay_stop, false);
	g->listen_fd = unix_listen(g->out_sock, err);
	if (g->listen_fd < 0)
		return -1;
	if (pthread_create(&g->acceptor, NULL, acceptor_main, g) != 0) {
		close(g->listen_fd);
		g->listen_fd = -1;
		unlink(g->out_sock);
		return ferr_set(err, FERR_INTERNAL,
				"cannot start the acceptor");
	}
	g->acceptor_started = true;
	return 0;
}

void channels_finish(struct mig *g)
{
	uint64_t deadline = now_ms() + CHANNEL_DRAIN_MS;

	while (now_ms() < deadline) {
		uint64_t before = atomic_load(&g->ctr.to_remote);

		usleep(50 * 1000);
		if (atomic_load(&g->ctr.to_remote) == before)
			break;
	}
	atomic_store(&g->relay_stop, true);
	if (g->acceptor_started)
		pthread_join(g->acceptor, NULL);
	g->acceptor_started = false;
	for (unsigned i = 0; i < g->nthreads; i++)
		pthread_join(g->chan_thread[i], NULL);
	g->nthreads = 0;
	conn_close(&g->ready, false, &g->ctr); /* QEMU never came for it */
	if (g->listen_fd >= 0) {
		close(g->listen_fd);
		g->listen_fd = -1;
	}
	unlink(g->out_sock);
}
