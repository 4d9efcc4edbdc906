/* ct.c - the tracked flows of a VM (firewall.h): export, import and
 * flush through libnetfilter_conntrack, inside the host's namespace. */
#define _GNU_SOURCE
#include "fw_int.h"
#include "ct_wire.h"
#include "netdev.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>

/* At most this many flows are read before the best FERRY_FW_CT_FLOWS_MAX
 * are kept (the kernel's default table size). */
#define CT_READ_MAX (4 * FERRY_FW_CT_FLOWS_MAX)
#define IPS_NAT_BITS (IPS_SRC_NAT | IPS_DST_NAT | IPS_SEQ_ADJUST)

struct export {
	uint32_t tag;
	struct fw_ct_flow *flows;
	size_t n, cap;
	unsigned skipped;
	bool full;
};

/* How much a flow matters when there are too many: established TCP
 * first, then other assured flows, then the rest. */
static int flow_rank(const struct fw_ct_flow *f)
{
	if (f->proto == 6 && f->tcp_state == TCP_CONNTRACK_ESTABLISHED)
		return 0;
	return f->status & FW_CT_STATUS_ASSURED ? 1 : 2;
}

static int rank_cmp(const void *a, const void *b)
{
	return flow_rank(a) - flow_rank(b);
}

/* One tracked flow as a record, or false when ferry cannot carry it. */
static bool flow_of(const struct nf_conntrack *ct, struct fw_ct_flow *f)
{
	uint8_t l3 = nfct_get_attr_u8(ct, ATTR_L3PROTO);
	uint32_t st = nfct_get_attr_u32(ct, ATTR_STATUS);

	memset(f, 0, sizeof(*f));
	if ((st & IPS_NAT_BITS) || nfct_attr_is_set(ct, ATTR_HELPER_NAME) ||
	    (nfct_attr_is_set(ct, ATTR_ZONE) && nfct_get_attr_u16(ct, ATTR_ZONE)))
		return false;
	f->proto = nfct_get_attr_u8(ct, ATTR_L4PROTO);
	f->status = st & FW_CT_STATUS_KNOWN;
	f->timeout = nfct_get_attr_u32(ct, ATTR_TIMEOUT);
	if (f->timeout == 0)
		f->timeout = 1;
	if (f->timeout > FERRY_FW_CT_TIMEOUT_MAX)
		f->timeout = FERRY_FW_CT_TIMEOUT_MAX;
	if (l3 == AF_INET) {
		uint32_t s = nfct_get_attr_u32(ct, ATTR_IPV4_SRC);
		uint32_t d = nfct_get_attr_u32(ct, ATTR_IPV4_DST);

		/* no NAT: the reply tuple is the inverse */
		if (nfct_get_attr_u32(ct, ATTR_REPL_IPV4_SRC) != d ||
		    nfct_get_attr_u32(ct, ATTR_REPL_IPV4_DST) != s)
			return false;
		f->family = 4;
		memcpy(f->src, &s, 4);
		memcpy(f->dst, &d, 4);
	} else if (l3 == AF_INET6) {
		f->family = 6;
		memcpy(f->src, nfct_get_attr(ct, ATTR_IPV6_SRC), 16);
		memcpy(f->dst, nfct_get_attr(ct, ATTR_IPV6_DST), 16);
		if (memcmp(nfct_get_attr(ct, ATTR_REPL_IPV6_SRC), f->dst, 16) ||
		    memcmp(nfct_get_attr(ct, ATTR_REPL_IPV6_DST), f->src, 16))
			return false;
	} else {
		return false;
	}
	if (f->proto == 6 || f->proto == 17) {
		f->sport = ntohs(nfct_get_attr_u16(ct, ATTR_PORT_SRC));
		f->dport = ntohs(nfct_get_attr_u16(ct, ATTR_PORT_DST));
		if (ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC)) != f->dport ||
		    ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST)) != f->sport)
			return false;
	} else if ((f->proto == 1 && f->family == 4) ||
		   (f->proto == 58 && f->family == 6)) {
		f->sport = ntohs(nfct_get_attr_u16(ct, ATTR_ICMP_ID));
		f->icmp_type = nfct_get_attr_u8(ct, ATTR_ICMP_TYPE);
		f->icmp_code = nfct_get_attr_u8(ct, ATTR_ICMP_CODE);
	} else {
		return false;
	}
	if (f->proto == 6) {
		f->tcp_state = nfct_get_attr_u8(ct, ATTR_TCP_STATE);
		f->wscale[0] = nfct_get_attr_u8(ct, ATTR_TCP_WSCALE_ORIG);
		f->wscale[1] = nfct_get_attr_u8(ct, ATTR_TCP_WSCALE_REPL);
		f->tcp_flags[0] = nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_ORIG) &
				  FW_CT_TCP_FLAGS;
		f->tcp_flags[1] = nfct_get_attr_u8(ct, ATTR_TCP_FLAGS_REPL) &
				  FW_CT_TCP_FLAGS;
	}
	/* what the receiver would refuse is not worth sending */
	{
		uint8_t rec[FW_CT_REC_LEN];
		struct fw_ct_flow back;

		fw_ct_encode(rec, f);
		return fw_ct_decode(rec, &back, NULL) == 0;
	}
}

static int export_cb(enum nf_conntrack_msg_type type, struct nf_conntrack *ct,
		     void *data)
{
	struct export *x = data;
	struct fw_ct_flow f;

	(void)type;
	if ((nfct_get_attr_u32(ct, ATTR_MARK) & FW_MARK_TAG) != x->tag)
		return NFCT_CB_CONTINUE; /* the kernel filters; be sure */
	if (!flow_of(ct, &f)) {
		x->skipped++;
		return NFCT_CB_CONTINUE;
	}
	if (x->n == x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 256;
		struct fw_ct_flow *p;

		if (cap > CT_READ_MAX || !(p = realloc(x->flows,
						       cap * sizeof(*p)))) {
			x->full = true;
			return NFCT_CB_STOP;
		}
		x->flows = p;
		x->cap = cap;
	}
	x->flows[x->n++] = f;
	return NFCT_CB_CONTINUE;
}

struct ct_job {
	uint32_t tag;
	/* export */
	struct export x;
	/* import */
	const uint8_t *buf;
	uint32_t count;
	/* results */
	unsigned done;
};

static struct nfct_handle *ct_open(struct ferr *err)
{
	struct nfct_handle *h = nfct_open(CONNTRACK, 0);

	if (!h)
		ferr_set(err, errno == EPERM ? FERR_FORBIDDEN : FERR_UNAVAILABLE,
			 "conntrack: %s", strerror(errno));
	return h;
}

static struct nfct_filter_dump *tag_filter(uint32_t tag, uint8_t family)
{
	struct nfct_filter_dump *fd = nfct_filter_dump_create();
	struct nfct_filter_dump_mark m = { .val = tag, .mask = FW_MARK_TAG };

	if (fd) {
		nfct_filter_dump_set_attr(fd, NFCT_FILTER_DUMP_MARK, &m);
		nfct_filter_dump_set_attr_u8(fd, NFCT_FILTER_DUMP_L3NUM, family);
	}
	return fd;
}

/* In the namespace: read the VM's flows of both families. */
static int export_run(void *arg, struct ferr *err)
{
	struct ct_job *j = arg;
	struct nfct_handle *h = ct_open(err);
	const uint8_t families[] = { AF_INET, AF_INET6 };
	int rc = 0;

	if (!h)
		return -1;
	nfct_callback_register(h, NFCT_T_ALL, export_cb, &j->x);
	for (int i = 0; i < 2 && rc == 0; i++) {
		struct nfct_filter_dump *fd = tag_filter(j->tag, families[i]);

		if (!fd || (nfct_query(h, NFCT_Q_DUMP_FILTER, fd) < 0 &&
			    !j->x.full))
			rc = ferr_set(err, FERR_UNAVAILABLE,
				      "conntrack: cannot list flows: %s",
				      strerror(errno));
		nfct_filter_dump_destroy(fd);
	}
	nfct_close(h);
	return rc;
}

int fw_ct_export(const char *ns, uint32_t tag, uint8_t **buf, size_t *len,
		 unsigned *count, unsigned *skipped, struct ferr *err)
{
	struct ct_job j = { .tag = tag, .x = { .tag = tag } };
	size_t n;

	*buf = NULL;
	*len = 0;
	if (netns_call(ns, export_run, &j, err) < 0) {
		free(j.x.flows);
		return -1;
	}
	n = j.x.n;
	if (n > FERRY_FW_CT_FLOWS_MAX || j.x.full) {
		/* carry the flows that matter most */
		qsort(j.x.flows, n, sizeof(*j.x.flows), rank_cmp);
		if (n > FERRY_FW_CT_FLOWS_MAX)
			n = FERRY_FW_CT_FLOWS_MAX;
		j.x.skipped += (unsigned)(j.x.n - n);
		log_warn("firewall: flow tag %#x has more flows than a "
			 "migration carries (%d): %u left behind",
			 (unsigned)tag, FERRY_FW_CT_FLOWS_MAX, j.x.skipped);
	}
	*len = FW_CT_HDR_LEN + n * FW_CT_REC_LEN;
	*buf = malloc(*len);
	if (!*buf) {
		free(j.x.flows);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	fw_ct_encode_header(*buf, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		fw_ct_encode(*buf + FW_CT_HDR_LEN + i * FW_CT_REC_LEN,
			     &j.x.flows[i]);
	free(j.x.flows);
	*count = (unsigned)n;
	if (skipped)
		*skipped = j.x.skipped;
	return 0;
}

/* A tracked flow for record f, tagged tag. */
static struct nf_conntrack *ct_of(const struct fw_ct_flow *f, uint32_t tag)
{
	struct nf_conntrack *ct = nfct_new();

	if (!ct)
		return NULL;
	nfct_set_attr_u8(ct, ATTR_L3PROTO, f->family == 4 ? AF_INET : AF_INET6);
	if (f->family == 4) {
		uint32_t s, d;

		memcpy(&s, f->src, 4);
		memcpy(&d, f->dst, 4);
		nfct_set_attr_u32(ct, ATTR_IPV4_SRC, s);
		nfct_set_attr_u32(ct, ATTR_IPV4_DST, d);
	} else {
		nfct_set_attr(ct, ATTR_IPV6_SRC, f->src);
		nfct_set_attr(ct, ATTR_IPV6_DST, f->dst);
	}
	nfct_set_attr_u8(ct, ATTR_L4PROTO, f->proto);
	if (f->proto == 6 || f->proto == 17) {
		nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(f->sport));
		nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(f->dport));
	} else {
		nfct_set_attr_u16(ct, ATTR_ICMP_ID, htons(f->sport));
		nfct_set_attr_u8(ct, ATTR_ICMP_TYPE, f->icmp_type);
		nfct_set_attr_u8(ct, ATTR_ICMP_CODE, f->icmp_code);
	}
	if (f->proto == 6) {
		nfct_set_attr_u8(ct, ATTR_TCP_STATE, f->tcp_state);
		nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_ORIG, f->tcp_flags[0]);
		nfct_set_attr_u8(ct, ATTR_TCP_MASK_ORIG, FW_CT_TCP_FLAGS);
		nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_REPL, f->tcp_flags[1]);
		nfct_set_attr_u8(ct, ATTR_TCP_MASK_REPL, FW_CT_TCP_FLAGS);
		nfct_set_attr_u8(ct, ATTR_TCP_WSCALE_ORIG, f->wscale[0]);
		nfct_set_attr_u8(ct, ATTR_TCP_WSCALE_REPL, f->wscale[1]);
	}
	/* no NAT: the reply tuple is the original's inverse (for ICMP,
	 * an echo request's is an echo reply) */
	nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);
	nfct_set_attr_u32(ct, ATTR_STATUS, f->status);
	nfct_set_attr_u32(ct, ATTR_TIMEOUT, f->timeout);
	nfct_set_attr_u32(ct, ATTR_MARK, tag);
	return ct;
}

/* In the namespace: create (or update) every flow. */
static int import_run(void *arg, struct ferr *err)
{
	struct ct_job *j = arg;
	struct nfct_handle *h = ct_open(err);
	int rc = 0;

	if (!h)
		return -1;
	for (uint32_t i = 0; i < j->count && rc == 0; i++) {
		struct fw_ct_flow f;
		struct nf_conntrack *ct;

		fw_ct_decode(j->buf + FW_CT_HDR_LEN + (size_t)i * FW_CT_REC_LEN,
			     &f, NULL); /* checked whole before */
		ct = ct_of(&f, j->tag);
		if (!ct) {
			rc = ferr_set(err, FERR_INTERNAL, "out of memory");
			break;
		}
		if (nfct_query(h, NFCT_Q_CREATE, ct) < 0 &&
		    (errno != EEXIST || nfct_query(h, NFCT_Q_UPDATE, ct) < 0))
			rc = ferr_set(err, FERR_UNAVAILABLE,
				      "conntrack: cannot import flow %u: %s",
				      (unsigned)i, strerror(errno));
		else
			j->done++;
		nfct_destroy(ct);
	}
	nfct_close(h);
	return rc;
}

int fw_ct_import(const char *ns, uint32_t tag, const uint8_t *buf,
		 size_t len, unsigned *count, struct ferr *err)
{
	struct ct_job j = { .tag = tag, .buf = buf };

	*count = 0;
	if (fw_ct_check(buf, len, &j.count, err) < 0)
		return -1;
	if (j.count && netns_call(ns, import_run, &j, err) < 0)
		return -1;
	*count = j.done;
	return 0;
}

/* The flows to delete: listed first, deleted after the dump. */
struct flush {
	uint32_t tag;
	struct nf_conntrack **list;
	size_t n;
	unsigned done;
};

static int flush_cb(enum nf_conntrack_msg_type type, struct nf_conntrack *ct,
		    void *data)
{
	struct flush *fl = data;

	(void)type;
	if ((nfct_get_attr_u32(ct, ATTR_MARK) & FW_MARK_TAG) == fl->tag &&
	    fl->n < CT_READ_MAX)
		fl->list[fl->n++] = nfct_clone(ct);
	return NFCT_CB_CONTINUE;
}

/* In the namespace: list the tagged flows, then delete each. */
static int flush_run(void *arg, struct ferr *err)
{
	struct flush *fl = arg;
	struct nfct_handle *h = ct_open(err);
	const uint8_t families[] = { AF_INET, AF_INET6 };

	if (!h)
		return -1;
	fl->list = calloc(CT_READ_MAX, sizeof(*fl->list));
	if (!fl->list) {
		nfct_close(h);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	nfct_callback_register(h, NFCT_T_ALL, flush_cb, fl);
	for (int i = 0; i < 2; i++) {
		struct nfct_filter_dump *fd = tag_filter(fl->tag, families[i]);

		if (fd)
			nfct_query(h, NFCT_Q_DUMP_FILTER, fd);
		nfct_filter_dump_destroy(fd);
	}
	for (size_t i = 0; i < fl->n; i++) {
		if (!fl->list[i])
			continue;
		if (nfct_query(h, NFCT_Q_DESTROY, fl->list[i]) == 0)
			fl->done++;
		nfct_destroy(fl->list[i]);
	}
	free(fl->list);
	nfct_close(h);
	return 0;
}

int fw_ct_flush(const char *ns, uint32_t tag, unsigned *count,
		struct ferr *err)
{
	struct flush fl = { .tag = tag };

	if (netns_call(ns, flush_run, &fl, err) < 0)
		return -1;
	if (count)
		*count = fl.done;
	return 0;
}
