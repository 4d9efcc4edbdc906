/* netns.c - running work inside a network namespace. */
#define _GNU_SOURCE
#include "netdev.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NETNS_DIR "/run/netns"

bool netns_name_is_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > NETDEV_NETNS_MAX || !strcmp(s, ".") ||
	    !strcmp(s, ".."))
		return false;
	for (const char *c = s; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' ||
		      *c == '-'))
			return false;
	return true;
}

bool ifname_is_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > NETDEV_IFNAME_MAX || !strcmp(s, ".") ||
	    !strcmp(s, ".."))
		return false;
	for (const char *c = s; *c; c++)
		if (*c == '/' || *c == ':' || *c <= ' ' || *c > '~')
			return false;
	return true;
}

struct ns_job {
	const char *ns;
	int (*fn)(void *arg, struct ferr *err);
	void *arg;
	struct ferr err;
	int rc;
};

static void *ns_thread(void *p)
{
	struct ns_job *j = p;
	char path[sizeof(NETNS_DIR) + NETDEV_NETNS_MAX + 2];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", NETNS_DIR, j->ns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		j->rc = ferr_set(&j->err, FERR_UNAVAILABLE,
				 "network namespace %s: %s", j->ns,
				 strerror(errno));
		return NULL;
	}
	if (setns(fd, CLONE_NEWNET) < 0) {
		j->rc = ferr_set(&j->err, FERR_UNAVAILABLE,
				 "cannot enter network namespace %s: %s", j->ns,
				 strerror(errno));
		close(fd);
		return NULL;
	}
	close(fd);
	j->rc = j->fn(j->arg, &j->err);
	return NULL;
}

int netns_call(const char *ns, int (*fn)(void *arg, struct ferr *err),
	       void *arg, struct ferr *err)
{
	struct ns_job j = { .ns = ns, .fn = fn, .arg = arg, .rc = -1 };
	pthread_t t;

	if (!ns || !*ns)
		return fn(arg, err);
	if (!netns_name_is_valid(ns))
		return ferr_set(err, FERR_INVALID,
				"\"%.64s\" is not a network namespace name",
				ns);
	ferr_clear(&j.err);
	if (pthread_create(&t, NULL, ns_thread, &j) != 0)
		return ferr_set(err, FERR_INTERNAL, "cannot start a thread");
	pthread_join(t, NULL);
	if (j.rc < 0 && err)
		*err = j.err;
	return j.rc;
}

struct sock_args {
	int domain, type, proto;
};

static int make_socket(void *p, struct ferr *err)
{
	struct sock_args *a = p;
	int fd = socket(a->domain, a->type, a->proto);

	if (fd < 0)
		return ferr_set(err, errno == EACCES || errno == EPERM
					     ? FERR_FORBIDDEN
					     : FERR_IO,
				"socket: %s", strerror(errno));
	return fd;
}

int netns_socket(const char *ns, int domain, int type, int proto,
		 struct ferr *err)
{
	struct sock_args a = { domain, type, proto };

	return netns_call(ns, make_socket, &a, err);
}
