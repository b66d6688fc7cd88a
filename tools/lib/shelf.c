/* libshelf's public API (tools/shelf.h): opening a client, and the object
 * operations on top of the maps (map.c) and the node connections
 * (client.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "shelf_int.h"

int sh_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

void sh_op_begin(struct shelf *s)
{
	s->deadline_ms = ovl_mono_ms() + (uint64_t)s->timeout_ms;
}

int sh_left_ms(const struct shelf *s)
{
	uint64_t now = ovl_mono_ms();

	if (!s->deadline_ms)
		return s->timeout_ms; /* outside an operation */
	return now >= s->deadline_ms ? 1 : (int)(s->deadline_ms - now);
}

bool sh_expired(const struct shelf *s)
{
	return s->deadline_ms && ovl_mono_ms() >= s->deadline_ms;
}

int sh_read_file(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = 0;
	*len = n;
	return 0;
}

SHELF_API int shelf_open(struct shelf **out, const char *dir, const char *broker, char *err,
			 size_t errlen)
{
	struct shelf *s = calloc(1, sizeof(*s));
	uint8_t buf[OVL_CERT_MAX_BYTES + 1], ca[OVL_ID_BYTES];
	char path[600];
	size_t len;
	int ret;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->timeout_ms = SHELF_TIMEOUT_MS_DEFAULT;
	s->connect_timeout_ms = SHELF_CONNECT_TIMEOUT_MS_DEFAULT;
	s->unreach_ms = SHELF_UNREACHABLE_MS_DEFAULT;
	s->inflight = SH_INFLIGHT_DEFAULT;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->broker, sizeof(s->broker), "%s", broker ? broker : "");
	snprintf(path, sizeof(path), "%s/id.key", dir);
	ret = ovl_id_load(&s->id, path, err, errlen);
	if (ret < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/client.cert", dir);
	if ((ret = sh_read_file(path, s->cert, sizeof(s->cert), &s->cert_len)) < 0) {
		sh_fail(err, errlen, ret, "cannot read client certificate '%s': %s", path, strerror(-ret));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/ca.pub", dir);
	if ((ret = sh_read_file(path, buf, sizeof(buf), &len)) < 0 || len < 64 ||
	    (buf[64] = 0, ovl_nodeid_parse((const char *)buf, ca) < 0)) {
		ret = sh_fail(err, errlen, -EINVAL, "cannot read the site CA key from '%s'", path);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/broker.pub", dir);
	if ((ret = sh_read_file(path, buf, sizeof(buf), &len)) < 0 ||
	    (buf[strcspn((char *)buf, "\r\n")] = 0, ovl_key_z85_decode((char *)buf, s->broker_key) < 0)) {
		ret = sh_fail(err, errlen, -EINVAL, "cannot read the broker key from '%s'", path);
		goto out;
	}
	s->kr = ovl_keyring_new();
	if (!s->kr || ovl_peers_new(&s->peers, ca, s->kr) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/broker.cert", dir);
	if ((ret = sh_read_file(path, buf, sizeof(buf), &len)) < 0) {
		sh_fail(err, errlen, ret, "cannot read broker certificate '%s'", path);
		goto out;
	}
	ret = ovl_peers_add_broker(s->peers, buf, len, (uint64_t)time(NULL), err, errlen);
	if (ret < 0)
		goto out;
	{
		struct ovl_cert bc;

		if ((ret = ovl_cert_decode(&bc, buf, len, err, errlen)) < 0)
			goto out;
		memcpy(s->broker_sign_pk, bc.sign_pk, OVL_ID_BYTES);
	}
	*out = s;
	s = NULL;
out:
	shelf_close(&s);
	return ret;
}

SHELF_API void shelf_close(struct shelf **sp)
{
	struct shelf *s = sp ? *sp : NULL;

	if (!s)
		return;
	sh_aio_destroy(s);
	sh_conns_close(s);
	sh_maps_release(s);
	ovl_link_client_destroy(&s->link);
	if (s->zctx)
		zmq_ctx_term(s->zctx);
	ovl_peers_destroy(&s->peers);
	ovl_keyring_destroy(&s->kr);
	ovl_id_destroy(&s->id);
	free(s);
	*sp = NULL;
}

SHELF_API void shelf_set_timeout(struct shelf *s, int timeout_ms)
{
	s->timeout_ms = timeout_ms > 0 ? timeout_ms : SHELF_TIMEOUT_MS_DEFAULT;
}

SHELF_API void shelf_set_connect_timeout(struct shelf *s, int ms)
{
	s->connect_timeout_ms = ms > 0 ? ms : SHELF_CONNECT_TIMEOUT_MS_DEFAULT;
}

SHELF_API void shelf_set_unreachable_ms(struct shelf *s, int ms)
{
	s->unreach_ms = ms > 0 ? ms : 0;
	s->unreach_loaded = false;
	s->nunreach = 0;
}

SHELF_API int shelf_set_chassis(struct shelf *s, const char *where, char *err, size_t errlen)
{
	const char *slash = where ? strchr(where, '/') : NULL;
	size_t slen = slash ? (size_t)(slash - where) : 0;
	const char *ch = slash ? slash + 1 : where;

	if (!where || !*where) {
		s->site[0] = s->chassis[0] = '\0';
		return 0;
	}
	if (slen >= sizeof(s->site) || strlen(ch) >= sizeof(s->chassis) || !*ch)
		return sh_fail(err, errlen, -EINVAL, "chassis '%s': expected CHASSIS or SITE/CHASSIS "
			       "(site at most %zu bytes, chassis 1..%zu)", where, sizeof(s->site) - 1,
			       sizeof(s->chassis) - 1);
	memcpy(s->site, where, slen);
	s->site[slen] = '\0';
	snprintf(s->chassis, sizeof(s->chassis), "%s", ch);
	return 0;
}

SHELF_API void shelf_get_counters(const struct shelf *s, struct shelf_counters *out)
{
	*out = s->counters;
}

SHELF_API void shelf_set_progress(struct shelf *s, shelf_progress_cb cb, void *arg)
{
	s->progress = cb;
	s->progress_arg = arg;
}

SHELF_API void shelf_set_warn(struct shelf *s, shelf_warn_cb cb, void *arg)
{
	s->warn = cb;
	s->warn_arg = arg;
}

/*
 * Run one keyed request against the key's node, refreshing the map and
 * retrying once on stale-map or a node that went away.
 */
static int keyed(struct shelf *s, const char *what, const char *slice, uint8_t type,
		 const void *key, size_t klen, struct ovl_wire_req *q, const void *payload,
		 size_t plen, struct ovl_wire_resp *r, uint8_t **out, size_t *outlen, char *err,
		 size_t errlen)
{
	char e2[768], kshow[80], text[INET6_ADDRSTRLEN];
	bool stale_retried = false, lost_retried = false;
	int ret = 0;

	sh_op_begin(s);
	/* the key as errors show it: its first 64 bytes, "..." when longer */
	snprintf(kshow, sizeof(kshow), "%.*s%s", (int)(klen < 64 ? klen : 64), (const char *)key,
		 klen > 64 ? "..." : "");
	if (!slice || !*slice)
		return sh_fail(err, errlen, -EINVAL, "%s '%s': no slice named", what, kshow);
	if (klen == 0 || klen > OVL_WIRE_KEY_MAX_BYTES)
		return sh_fail(err, errlen, -EINVAL,
			       "%s '%s': a key is 1 to %u bytes long, and this one is %zu bytes",
			       what, kshow, OVL_WIRE_KEY_MAX_BYTES, klen);
	/* at most one retry for a stale map and one for a node down or gone,
	 * each with a fresh map, and none once the time is up */
	for (int attempt = 0; attempt < 3; attempt++) {
		struct sh_map *m = NULL;
		const struct ovl_msg_member *mb = NULL;
		struct sh_conn *c = NULL;

		r->status = OVL_WIRE_OK;
		ret = attempt ? sh_map_fetch(s, slice, &m, e2, sizeof(e2)) : sh_map_get(s, slice, &m, e2, sizeof(e2));
		if (ret == 0)
			ret = sh_map_locate(m, key, klen, &mb, e2, sizeof(e2));
		if (ret < 0)
			break;
		inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
		if (mb->state == OVL_MSG_STATE_DOWN && attempt == 0) {
			lost_retried = true;
			continue; /* the map may be newer at the broker */
		}
		ret = sh_conn_get(s, mb->addr, mb->port, slice, &c, e2, sizeof(e2));
		if (ret == 0) {
			snprintf(q->slice, sizeof(q->slice), "%s", slice);
			q->epoch = m->msg.u.map.epoch;
			memcpy(q->key, key, klen);
			q->key_len = (uint32_t)klen;
			ret = sh_call(s, c, type, q, payload, plen, m->msg.u.map.encrypt, r, out,
				   outlen, e2, sizeof(e2));
		}
		if (ret == 0 && r->status != OVL_WIRE_OK) {
			ret = ovl_wire_status_to_errno(r->status);
			snprintf(e2, sizeof(e2), "node %s: %s%s%s", text,
				 ovl_wire_status_name(r->status) ? ovl_wire_status_name(r->status) : "error",
				 r->message[0] ? ": " : "", r->message);
			if (out) {
				free(*out);
				*out = NULL;
			}
		}
		if (ret < 0 && r->status == OVL_WIRE_STALE_MAP && !stale_retried && !sh_expired(s)) {
			/* this node has a newer map: ask it first when the broker cannot answer */
			stale_retried = true;
			memcpy(&s->hint.addr, mb->addr, 16);
			s->hint.port = mb->port;
			s->has_hint = true;
			continue;
		}
		if (ret == -EHOSTUNREACH && !lost_retried && !sh_expired(s)) {
			lost_retried = true;
			continue;
		}
		break;
	}
	s->has_hint = false;
	if (ret < 0)
		sh_fail(err, errlen, ret, "%s '%s': %s", what, kshow, e2);
	return ret;
}

/* ---- replicas: reads and writes across the key's members ---------------------- */

/* A node did not answer: remember it and count it. */
static void member_lost(struct shelf *s, const struct ovl_msg_member *mb)
{
	struct sh_cand c;

	sh_cand_set(&c, mb, false);
	sh_node_lost(s, &c);
}

/* The time a candidate gets to connect: the connect timeout while others
 * remain, else the rest of the call's time. */
static int cand_budget(const struct shelf *s, bool last)
{
	int left = sh_left_ms(s);

	return last || s->connect_timeout_ms >= left ? left : s->connect_timeout_ms;
}

/*
 * The tombstones of the members that answered a GET with a plain
 * not-found (a GET does not name tombstones): asked with STAT, which does,
 * before an object found after them counts (docs/PROTOCOL.md 8.2).
 */
static void tombs_probe(struct shelf *s, const struct sh_map *m, const char *slice,
			const void *key, size_t klen, const struct sh_order *o,
			struct sh_rd_pass *p)
{
	struct ovl_wire_resp *r = calloc(1, sizeof(*r));
	char e2[256];

	for (unsigned i = 0; r && i < p->nnf && !sh_expired(s); i++) {
		const struct ovl_msg_member *mb = &m->msg.u.map.members[o->idx[p->nf[i]]];
		struct ovl_wire_req q = { 0 };
		struct sh_conn *c = NULL;

		if (sh_conn_get_within(s, mb->addr, mb->port, slice, cand_budget(s, false), &c, e2,
				       sizeof(e2)) < 0)
			continue;
		snprintf(q.slice, sizeof(q.slice), "%s", slice);
		q.epoch = m->msg.u.map.epoch;
		memcpy(q.key, key, klen);
		q.key_len = (uint32_t)klen;
		if (sh_call(s, c, OVL_WIRE_T_STAT, &q, NULL, 0, false, r, NULL, NULL, e2,
			    sizeof(e2)) == 0)
			sh_tombs_probe_answer(p, r);
	}
	p->nnf = 0;
	free(r);
}

/*
 * GET or STAT of key across its replicas (shelf.h, "Replicas"): the first
 * answer with the object that is newer than every tombstone seen. On
 * success *r is that answer and *out (GET) its payload; *from the node's
 * address. Otherwise the most telling failure (the sh_rd_* rules of
 * replica.c, which aio.c follows too).
 */
static int read_path(struct shelf *s, const char *what, const char *slice, uint8_t type,
		     const void *key, size_t klen, struct ovl_wire_req *q, struct ovl_wire_resp *r,
		     uint8_t **out, size_t *outlen, char from[INET6_ADDRSTRLEN], char *err,
		     size_t errlen)
{
	char kshow[SH_KSHOW_BYTES], e2[768];
	struct sh_rd_pass *p = calloc(1, sizeof(*p));
	unsigned stale_retries = 0, busy_retries = 0;
	bool again = true, first = true;
	int ret = 0;

	if (!p)
		return -ENOMEM;
	sh_op_begin(s);
	sh_key_show(key, klen, kshow);
	ret = sh_key_check(what, slice, kshow, klen, err, errlen);
	if (ret < 0)
		goto done;
	while (again) {
		struct sh_map *m = NULL;
		struct sh_order o = { 0 };
		bool *dead = NULL;

		again = false;
		sh_rd_pass_begin(p, first);
		first = false;
		ret = stale_retries ? sh_map_fetch(s, slice, &m, e2, sizeof(e2))
				    : sh_map_get(s, slice, &m, e2, sizeof(e2));
		if (ret == 0 && !(dead = sh_dead_members(s, &m->msg.u.map)))
			ret = -ENOMEM;
		if (ret == 0) {
			ret = sh_order_build(&m->msg.u.map, key, klen, dead, true, s->site, s->chassis,
					     &o);
			if (ret == -EHOSTUNREACH)
				snprintf(e2, sizeof(e2), "slice '%s' has no member to hold objects",
					 slice);
		}
		if (ret < 0) {
			free(dead);
			sh_rd_note(&p->fail, SH_RK_MAP, ret, e2);
			break;
		}
		ret = 0;
		for (unsigned i = 0; i < o.n; i++) {
			const struct ovl_msg_member *mb = &m->msg.u.map.members[o.idx[i]];
			struct sh_conn *c = NULL;
			struct sh_cand cand;
			enum sh_rd_verdict vd;
			bool found = false;

			sh_cand_set(&cand, mb, o.home[i]);
			if (sh_rd_pass_done(p, o.home[i], o.nhomes))
				break;
			if (sh_expired(s) && p->tried) {
				sh_rd_note(&p->fail, SH_RK_UNREACHABLE, -EHOSTUNREACH, "the time is up");
				break;
			}
			p->tried++;
			if (out) {
				*out = NULL;
				*outlen = 0;
			}
			ret = sh_conn_get_within(s, mb->addr, mb->port, slice,
						 cand_budget(s, i + 1 == o.n), &c, e2, sizeof(e2));
			if (ret == 0) {
				snprintf(q->slice, sizeof(q->slice), "%s", slice);
				q->epoch = m->msg.u.map.epoch;
				memcpy(q->key, key, klen);
				q->key_len = (uint32_t)klen;
				ret = sh_call(s, c, type, q, NULL, 0, m->msg.u.map.encrypt, r, out,
					      outlen, e2, sizeof(e2));
			}
			if (ret == -ENOMEM)
				break;
			if (ret < 0) {
				sh_rd_lost(s, p, what, kshow, &cand, ret, e2);
				ret = 0;
				continue;
			}
			vd = sh_rd_answer(s, p, what, kshow, &cand, i, type, r, out ? *out : NULL,
					  out ? *outlen : 0,
					  stale_retries < SH_STALE_RETRIES && !sh_expired(s));
			if (vd == SH_RD_OBJECT) {
				if (type == OVL_WIRE_T_GET && p->nnf)
					tombs_probe(s, m, slice, key, klen, &o, p);
				found = sh_rd_accept(s, p, o.home[i], r);
			} else if (vd == SH_RD_STALE) {
				stale_retries++;
				again = true;
			}
			if (found) {
				if (i > 0)
					s->counters.failovers++;
				snprintf(from, INET6_ADDRSTRLEN, "%s", cand.text);
				ret = 1;
				break;
			}
			if (out) {
				free(*out);
				*out = NULL;
				*outlen = 0;
			}
			if (again)
				break;
		}
		sh_order_release(&o);
		free(dead);
		if (ret == 1 || ret == -ENOMEM)
			break;
		/* a replica answered busy (taking its hints back after a restart or
		 * a cut, a round of about 250 ms) and none gave the object: what
		 * the others said may be older than what it is about to hold, so
		 * ask again after a pause, as a busy write does */
		if (!again && p->saw_busy && busy_retries < SHELF_WRITE_BUSY_RETRIES &&
		    sh_left_ms(s) > sh_busy_pause_ms(busy_retries) + 100) {
			struct timespec ts = { .tv_nsec = sh_busy_pause_ms(busy_retries) * 1000000L };

			nanosleep(&ts, NULL);
			busy_retries++;
			again = true;
		}
	}
	s->has_hint = false;
	if (ret == 1)
		ret = 0;
	else if (ret != -ENOMEM)
		ret = sh_rd_fail_end(p, what, kshow, err, errlen);
done:
	free(p);
	return ret;
}

/*
 * PUT or DELETE on a slice with R > 1: to the first live member in
 * placement order (the head), falling over to the next when one refuses
 * the connection or does not answer. Any answer is the node's verdict
 * (stale-map: a fresh map, and again, SH_STALE_RETRIES times at most;
 * busy: a fresh map and again after a pause, SHELF_WRITE_BUSY_RETRIES times
 * at most, while time is left: the head says busy when too few copies were
 * durable, as when a replica's map was newer than its own; a write sent
 * again carries a new version, so at worst it replaces the copy the busy
 * one left).
 */
static int write_path(struct shelf *s, const char *what, const char *slice, uint8_t type,
		      const void *key, size_t klen, struct ovl_wire_req *q, const void *payload,
		      size_t plen, struct ovl_wire_resp *r, char node[INET6_ADDRSTRLEN], char *err,
		      size_t errlen)
{
	char kshow[80], e2[768] = "no node answered", text[INET6_ADDRSTRLEN];
	bool fresh = false, again = true;
	unsigned stale_retries = 0;
	unsigned busy_retries = 0;
	int ret = 0;

	sh_key_show(key, klen, kshow);
	while (again) {
		struct sh_map *m = NULL;
		struct sh_order o = { 0 };
		bool *dead = NULL;

		again = false;
		ret = fresh ? sh_map_fetch(s, slice, &m, e2, sizeof(e2))
			    : sh_map_get(s, slice, &m, e2, sizeof(e2));
		if (ret == 0 && !(dead = sh_dead_members(s, &m->msg.u.map)))
			ret = -ENOMEM;
		if (ret == 0) {
			ret = sh_order_build(&m->msg.u.map, key, klen, dead, false, NULL, NULL, &o);
			if (ret == -EHOSTUNREACH)
				snprintf(e2, sizeof(e2), "slice '%s' has no member to hold objects",
					 slice);
		}
		free(dead);
		if (ret < 0)
			break;
		ret = -EHOSTUNREACH;
		for (unsigned i = 0; i < o.n && ret == -EHOSTUNREACH; i++) {
			const struct ovl_msg_member *mb = &m->msg.u.map.members[o.idx[i]];
			struct sh_conn *c = NULL;

			if (sh_expired(s) && i)
				break;
			inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
			ret = sh_conn_get_within(s, mb->addr, mb->port, slice,
						 cand_budget(s, i + 1 == o.n), &c, e2, sizeof(e2));
			if (ret == 0) {
				snprintf(q->slice, sizeof(q->slice), "%s", slice);
				q->epoch = m->msg.u.map.epoch;
				memcpy(q->key, key, klen);
				q->key_len = (uint32_t)klen;
				ret = sh_call(s, c, type, q, payload, plen, m->msg.u.map.encrypt, r,
					      NULL, NULL, e2, sizeof(e2));
			}
			if (ret == -EHOSTUNREACH) {
				member_lost(s, mb);
				continue;
			}
			if (ret < 0)
				break;
			sh_unreach_clear(s, mb->addr, mb->port);
			if (i > 0)
				s->counters.failovers++;
			snprintf(node, INET6_ADDRSTRLEN, "%s", text);
			if (r->status == OVL_WIRE_OK)
				break;
			ret = ovl_wire_status_to_errno(r->status);
			sh_status_text(e2, sizeof(e2), text, r);
			if (r->status == OVL_WIRE_BUSY)
				s->counters.busy++;
			if (r->status == OVL_WIRE_STALE_MAP && stale_retries < SH_STALE_RETRIES &&
			    !sh_expired(s)) {
				stale_retries++;
				fresh = again = true;
				memcpy(&s->hint.addr, mb->addr, 16);
				s->hint.port = mb->port;
				s->has_hint = true;
			} else if (r->status == OVL_WIRE_BUSY && busy_retries < SHELF_WRITE_BUSY_RETRIES &&
				   sh_left_ms(s) > (100 << busy_retries) + 100) {
				struct timespec ts = { .tv_nsec = (100L << busy_retries) * 1000000L };

				nanosleep(&ts, NULL);
				busy_retries++;
				fresh = again = true;
			}
		}
		sh_order_release(&o);
	}
	s->has_hint = false;
	if (ret < 0)
		sh_fail(err, errlen, ret, "%s '%s': %s", what, kshow, e2);
	return ret;
}

/* A put or rm: by R, through the head and its fallbacks, or the one home. */
static int write_op(struct shelf *s, const char *what, const char *slice, uint8_t type,
		    const void *key, size_t klen, struct ovl_wire_req *q, const void *payload,
		    size_t plen, char *err, size_t errlen)
{
	struct ovl_wire_resp *r = calloc(1, sizeof(*r));
	struct sh_map *m = NULL;
	struct shelf_write_info *wi = &s->last_write.info;
	char kshow[80], node[INET6_ADDRSTRLEN] = "";
	unsigned replicas = 1;
	int ret;

	if (!r)
		return -ENOMEM;
	sh_op_begin(s);
	sh_key_show(key, klen, kshow);
	ret = sh_key_check(what, slice, kshow, klen, err, errlen);
	if (ret == 0)
		ret = sh_map_get(s, slice, &m, err, errlen);
	if (ret < 0)
		goto out;
	replicas = m->msg.u.map.replicas;
	if (replicas > 1)
		ret = write_path(s, what, slice, type, key, klen, q, payload, plen, r, node, err,
				 errlen);
	else
		ret = keyed(s, what, slice, type, key, klen, q, payload, plen, r, NULL, NULL, err,
			    errlen);
	if (ret < 0)
		goto out;
	memset(wi, 0, sizeof(*wi));
	s->last_write.valid = true;
	wi->replicas = replicas ? replicas : 1;
	wi->has_held = r->has_held;
	wi->held = r->nheld;
	wi->homes = r->homes;
	wi->superseded = r->superseded;
	wi->has_ver = r->has_ver;
	wi->ver.hlc = r->ver.hlc;
	wi->ver.node = r->ver.node;
	snprintf(wi->node, sizeof(wi->node), "%s", node);
out:
	free(r);
	return ret;
}

int sh_obj_put(struct shelf *s, const char *slice, const void *key, size_t klen,
	       const void *data, size_t len, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };

	q.size = len;
	q.crc = ovl_crc32c(0, data, len);
	return write_op(s, "put", slice, OVL_WIRE_T_PUT, key, klen, &q, data, len, err, errlen);
}

int sh_obj_delete(struct shelf *s, const char *slice, const void *key, size_t klen, char *err,
		  size_t errlen)
{
	struct ovl_wire_req q = { 0 };

	return write_op(s, "rm", slice, OVL_WIRE_T_DELETE, key, klen, &q, NULL, 0, err, errlen);
}

/* ---- the public object calls: large.c applies the large-object rules ---- */

SHELF_API int shelf_put(struct shelf *s, const char *slice, const void *key, size_t klen,
			const void *data, size_t len, char *err, size_t errlen)
{
	return sh_large_put(s, slice, key, klen, data ? data : "", len, NULL, NULL, err, errlen);
}

SHELF_API int shelf_delete(struct shelf *s, const char *slice, const void *key, size_t klen,
			   char *err, size_t errlen)
{
	return sh_large_delete(s, slice, key, klen, err, errlen);
}

SHELF_API int shelf_get(struct shelf *s, const char *slice, const void *key, size_t klen,
			uint64_t off, uint64_t len, void **data, size_t *dlen, uint64_t *total,
			char *err, size_t errlen)
{
	return sh_large_get(s, slice, key, klen, off, len, NULL, NULL, data, dlen, total, err,
			    errlen);
}

SHELF_API int shelf_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
			 struct shelf_objstat *st, char *err, size_t errlen)
{
	return sh_large_stat(s, slice, key, klen, st, err, errlen);
}

SHELF_API int shelf_put_stream(struct shelf *s, const char *slice, const void *key, size_t klen,
			       uint64_t size, shelf_read_fn rd, void *arg, char *err,
			       size_t errlen)
{
	return sh_large_put(s, slice, key, klen, NULL, size, rd, arg, err, errlen);
}

static ssize_t fd_read(void *arg, void *buf, size_t len)
{
	int fd = *(const int *)arg;

	for (;;) {
		ssize_t r = read(fd, buf, len);

		if (r >= 0)
			return r;
		if (errno != EINTR)
			return -errno;
	}
}

SHELF_API int shelf_put_fd(struct shelf *s, const char *slice, const void *key, size_t klen,
			   int fd, char *err, size_t errlen)
{
	uint64_t size = SHELF_SIZE_UNKNOWN;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return sh_fail(err, errlen, -errno, "put: cannot stat the input: %s", strerror(errno));
	if (S_ISREG(st.st_mode)) {
		off_t at = lseek(fd, 0, SEEK_CUR);

		size = (uint64_t)st.st_size - (at > 0 && at <= st.st_size ? (uint64_t)at : 0);
	}
	return sh_large_put(s, slice, key, klen, NULL, size, fd_read, &fd, err, errlen);
}

SHELF_API int shelf_get_stream(struct shelf *s, const char *slice, const void *key, size_t klen,
			       uint64_t off, uint64_t len, shelf_write_fn wr, void *arg,
			       uint64_t *total, char *err, size_t errlen)
{
	return sh_large_get(s, slice, key, klen, off, len, wr, arg, NULL, NULL, total, err, errlen);
}

static int fd_write(void *arg, const void *buf, size_t len)
{
	int fd = *(const int *)arg;
	const uint8_t *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

SHELF_API int shelf_get_fd(struct shelf *s, const char *slice, const void *key, size_t klen,
			   uint64_t off, uint64_t len, int fd, uint64_t *total, char *err,
			   size_t errlen)
{
	return sh_large_get(s, slice, key, klen, off, len, fd_write, &fd, NULL, NULL, total, err,
			    errlen);
}

SHELF_API void shelf_set_inflight(struct shelf *s, unsigned chunks)
{
	s->inflight = chunks < 1 ? 1 : chunks > SH_INFLIGHT_MAX ? SH_INFLIGHT_MAX : chunks;
	s->inflight_set = true;
}

SHELF_API int shelf_last_write(const struct shelf *s, struct shelf_write_info *out)
{
	if (!s->last_write.valid)
		return -ENOENT;
	*out = s->last_write.info;
	return 0;
}

static void info_of(const struct ovl_wire_resp *r, struct sh_objinfo *info)
{
	if (!info)
		return;
	info->size = r->size;
	info->crc = r->crc;
	info->seq = r->seq;
	info->has_ver = r->has_ver;
	info->ver.hlc = r->has_ver ? r->ver.hlc : 0;
	info->ver.node = r->has_ver ? r->ver.node : 0;
}

int sh_obj_get(struct shelf *s, const char *slice, const void *key, size_t klen, uint64_t off,
	       uint64_t len, uint8_t **data, size_t *dlen, struct sh_objinfo *info, char *err,
	       size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp *r = calloc(1, sizeof(*r));
	char from[INET6_ADDRSTRLEN];
	uint8_t *body = NULL;
	size_t blen = 0;
	int ret;

	*data = NULL;
	*dlen = 0;
	if (!r)
		return -ENOMEM;
	if (off || len != UINT64_MAX) {
		q.has_range = true;
		q.offset = off;
		/* to the end: no object is longer than the largest length */
		q.length = len == UINT64_MAX ? OVL_WIRE_OBJECT_MAX_BYTES : len;
	}
	/* end to end: each replica's bytes are checked against the crc it read
	 * and verified (read_path), and a mismatch reads another replica */
	ret = read_path(s, "get", slice, OVL_WIRE_T_GET, key, klen, &q, r, &body, &blen, from, err,
			errlen);
	if (ret == 0) {
		*data = body ? body : malloc(1);
		*dlen = blen;
		info_of(r, info);
		if (!*data)
			ret = -ENOMEM;
	}
	free(r);
	return ret;
}

int sh_obj_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
		struct sh_objinfo *info, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp *r = calloc(1, sizeof(*r));
	char from[INET6_ADDRSTRLEN];
	int ret;

	if (!r)
		return -ENOMEM;
	ret = read_path(s, "stat", slice, OVL_WIRE_T_STAT, key, klen, &q, r, NULL, NULL, from, err,
			errlen);
	if (ret == 0)
		info_of(r, info);
	free(r);
	return ret;
}

/* One pass of shelf_stat_replicas() over map m; *stale when a node holds
 * a newer map. */
static int stat_pass(struct shelf *s, const char *slice, const void *key, size_t klen,
		     const char *kshow, struct sh_map *m, struct shelf_replica **outp, unsigned *np,
		     bool *stale, char *err, size_t errlen)
{
	struct ovl_wire_resp *r = calloc(1, sizeof(*r));
	struct shelf_replica *out = NULL;
	struct sh_order o = { 0 };
	bool *dead = NULL;
	char e2[768];
	unsigned n = 0;
	int ret = 0;

	*stale = false;
	if (!r || !(dead = sh_dead_members(s, &m->msg.u.map)))
		ret = -ENOMEM;
	if (ret == 0) {
		/* homes in placement order (no chassis preference: all are asked) */
		ret = sh_order_build(&m->msg.u.map, key, klen, dead, false, NULL, NULL, &o);
		if (ret == -EHOSTUNREACH)
			sh_fail(err, errlen, ret, "stat '%s': slice '%s' has no member to hold objects",
				kshow, slice);
	}
	if (ret == 0 && !(out = calloc(o.n ? o.n : 1, sizeof(*out))))
		ret = -ENOMEM;
	if (ret < 0)
		goto out;
	/* every home first (placement order), then the others */
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < o.n; i++) {
			const struct ovl_msg_member *mb = &m->msg.u.map.members[o.idx[i]];
			struct shelf_replica *rp = &out[n];
			struct ovl_wire_req q = { 0 };
			struct sh_conn *c = NULL;

			if (o.home[i] != (pass == 0))
				continue;
			memset(rp, 0, sizeof(*rp));
			memcpy(rp->id, mb->id, 32);
			inet_ntop(AF_INET6, mb->addr, rp->addr, sizeof(rp->addr));
			rp->port = mb->port;
			rp->home = o.home[i];
			if (sh_expired(s)) {
				rp->state = "unreachable";
				snprintf(rp->why, sizeof(rp->why), "not asked: the time is up");
				n += rp->home;
				continue;
			}
			ret = sh_conn_get_within(s, mb->addr, mb->port, slice, cand_budget(s, false),
						 &c, e2, sizeof(e2));
			if (ret == 0) {
				snprintf(q.slice, sizeof(q.slice), "%s", slice);
				q.epoch = m->msg.u.map.epoch;
				memcpy(q.key, key, klen);
				q.key_len = (uint32_t)klen;
				ret = sh_call(s, c, OVL_WIRE_T_STAT, &q, NULL, 0, false, r, NULL, NULL,
					      e2, sizeof(e2));
			}
			if (ret == -ENOMEM)
				goto out;
			if (ret < 0) {
				if (ret == -EHOSTUNREACH)
					member_lost(s, mb);
				rp->state = ret == -EHOSTUNREACH ? "unreachable" : "error";
				snprintf(rp->why, sizeof(rp->why), "%.*s", (int)sizeof(rp->why) - 1, e2);
				n++;
				continue;
			}
			sh_unreach_clear(s, mb->addr, mb->port);
			rp->has_ver = r->has_ver;
			rp->ver.hlc = r->ver.hlc;
			rp->ver.node = r->ver.node;
			sh_status_text(e2, sizeof(e2), rp->addr, r);
			switch (r->status) {
			case OVL_WIRE_OK:
				rp->state = rp->home ? "home" : "hinted";
				rp->size = r->size;
				rp->crc = r->crc;
				rp->seq = r->seq;
				break;
			case OVL_WIRE_NOT_FOUND:
				rp->state = r->tomb ? "deleted" : "missing";
				break;
			case OVL_WIRE_CHECKSUM_MISMATCH:
				rp->state = "damaged";
				s->counters.checksum_errors++;
				break;
			case OVL_WIRE_STALE_MAP:
				*stale = true;
				rp->state = "error";
				snprintf(rp->why, sizeof(rp->why), "%.*s", (int)sizeof(rp->why) - 1, e2);
				break;
			case OVL_WIRE_BUSY:
				rp->state = "busy";
				s->counters.busy++;
				snprintf(rp->why, sizeof(rp->why), "%.*s", (int)sizeof(rp->why) - 1, e2);
				break;
			default:
				rp->state = "error";
				snprintf(rp->why, sizeof(rp->why), "%.*s", (int)sizeof(rp->why) - 1, e2);
				break;
			}
			/* other members are listed only when they have something to say */
			if (rp->home || strcmp(rp->state, "missing") != 0)
				n++;
		}
	}
	ret = 0;
	*outp = out;
	*np = n;
	out = NULL;
out:
	sh_order_release(&o);
	free(dead);
	free(out);
	free(r);
	return ret;
}

SHELF_API int shelf_stat_replicas(struct shelf *s, const char *slice, const void *key,
				  size_t klen, struct shelf_replica **outp, unsigned *np, char *err,
				  size_t errlen)
{
	struct sh_map *m = NULL;
	char kshow[80];
	bool stale = true;
	int ret;

	*outp = NULL;
	*np = 0;
	sh_op_begin(s);
	sh_key_show(key, klen, kshow);
	ret = sh_key_check("stat", slice, kshow, klen, err, errlen);
	/* a node that holds a newer map: ask everyone again with it, once */
	for (int attempt = 0; ret == 0 && attempt < 2 && stale; attempt++) {
		if (attempt) {
			if (sh_expired(s))
				break;
			free(*outp);
			*outp = NULL;
			*np = 0;
		}
		ret = attempt ? sh_map_fetch(s, slice, &m, err, errlen)
			      : sh_map_get(s, slice, &m, err, errlen);
		if (ret == 0)
			ret = stat_pass(s, slice, key, klen, kshow, m, outp, np, &stale, err, errlen);
	}
	return ret;
}

SHELF_API int shelf_locate(struct shelf *s, const char *slice, const void *key, size_t klen,
			   char *addr, size_t addrlen, uint16_t *port, char *err, size_t errlen)
{
	struct sh_map *m = NULL;
	const struct ovl_msg_member *mb = NULL;
	int ret;

	sh_op_begin(s);
	ret = sh_map_get(s, slice, &m, err, errlen);
	if (ret == 0)
		ret = sh_map_locate(m, key, klen, &mb, err, errlen);
	if (ret == 0) {
		inet_ntop(AF_INET6, mb->addr, addr, (socklen_t)addrlen);
		*port = mb->port;
	}
	return ret;
}

/* One key as a node listed it. */
struct vent {
	uint8_t *key;              /* malloc'd */
	uint32_t len;
	struct ovl_wire_ver ver;
	bool tomb;
};

struct vlist {
	struct vent *e;
	size_t n, cap;
};

static int bin_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c ? c : (alen > blen) - (alen < blen);
}

/* key order; for one key, the newest version first (and a tombstone before
 * an object of the same version) */
static int vent_cmp(const void *a, const void *b)
{
	const struct vent *x = a, *y = b;
	int c = bin_cmp(x->key, x->len, y->key, y->len);

	if (c)
		return c;
	c = ovl_wire_ver_cmp(&y->ver, &x->ver);
	return c ? c : (int)y->tomb - (int)x->tomb;
}

static int vlist_add(struct vlist *l, const uint8_t *key, uint32_t len,
		     const struct ovl_wire_ver *ver, bool tomb)
{
	uint8_t *copy = malloc(len ? len : 1);

	if (!copy)
		return -ENOMEM;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct vent *e = realloc(l->e, cap * sizeof(*e));

		if (!e) {
			free(copy);
			return -ENOMEM;
		}
		l->e = e;
		l->cap = cap;
	}
	memcpy(copy, key, len);
	l->e[l->n++] = (struct vent){ copy, len, *ver, tomb };
	return 0;
}

static void vlist_clear(struct vlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->e[i].key);
	l->n = 0;
}

/* One node's page: LIST with versions (the plain form from a node that
 * predates them) into all. *more and last (the page's last key) when the
 * node has more. 0 or -errno with e2 saying why. */
static int list_node(struct shelf *s, const struct sh_map *m, const struct ovl_msg_member *mb,
		     const char *slice, const void *prefix, size_t plen, const uint8_t *after,
		     size_t alen, unsigned limit, struct vlist *all, bool *more, uint8_t *last,
		     size_t *last_len, char *e2, size_t e2len)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp *r = calloc(1, sizeof(*r));
	struct ovl_wire_vkey *vk = NULL;
	struct ovl_wire_bin *keys = NULL;
	struct sh_conn *c = NULL;
	char text[INET6_ADDRSTRLEN];
	uint8_t *body = NULL;
	size_t blen = 0;
	uint32_t nk = 0;
	int ret;

	*more = false;
	if (!r)
		return -ENOMEM;
	inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
	snprintf(q.slice, sizeof(q.slice), "%s", slice);
	q.epoch = m->msg.u.map.epoch;
	if (plen)
		memcpy(q.key, prefix, plen);
	q.key_len = (uint32_t)plen;
	if (alen)
		memcpy(q.after, after, alen);
	q.after_len = (uint32_t)alen;
	q.limit = limit;
	q.vers = true;
	ret = sh_conn_get(s, mb->addr, mb->port, slice, &c, e2, e2len);
	if (ret == 0)
		ret = sh_call(s, c, OVL_WIRE_T_LIST, &q, NULL, 0, m->msg.u.map.encrypt, r, &body,
			      &blen, e2, e2len);
	if (ret == 0 && r->status != OVL_WIRE_OK) {
		ret = ovl_wire_status_to_errno(r->status);
		sh_status_text(e2, e2len, text, r);
	}
	if (ret == 0 && r->has_crc && ovl_crc32c(0, body, blen) != r->crc) {
		ret = -EIO;
		snprintf(e2, e2len, "node %s: list payload checksum mismatch in transit", text);
	}
	if (ret == 0 && r->vers) {
		ret = ovl_wire_vkeys_decode(body, blen, &vk, &nk, e2, e2len);
		for (uint32_t j = 0; ret == 0 && j < nk; j++)
			ret = vlist_add(all, vk[j].ptr, vk[j].len, &vk[j].ver, vk[j].tomb);
		if (ret == 0 && nk) {
			*last_len = vk[nk - 1].len;
			memcpy(last, vk[nk - 1].ptr, *last_len);
		}
	} else if (ret == 0) {
		struct ovl_wire_ver none = { 0, 0 };

		ret = ovl_wire_keys_decode(body, blen, &keys, &nk, e2, e2len);
		for (uint32_t j = 0; ret == 0 && j < nk; j++)
			ret = vlist_add(all, keys[j].ptr, keys[j].len, &none, false);
		if (ret == 0 && nk) {
			*last_len = keys[nk - 1].len;
			memcpy(last, keys[nk - 1].ptr, *last_len);
		}
	}
	if (ret == 0 && r->count != nk) {
		ret = -EBADMSG;
		snprintf(e2, e2len, "node %s: list count %u differs from the payload's %u", text,
			 r->count, nk);
	}
	if (ret == 0)
		*more = r->more && nk > 0;
	free(vk);
	free(keys);
	free(body);
	free(r);
	return ret;
}

SHELF_API int shelf_list(struct shelf *s, const char *slice, const void *prefix, size_t plen,
			 const void *after, size_t alen, unsigned limit, shelf_list_cb cb,
			 void *arg, char *err, size_t errlen)
{
	return shelf_list_partial(s, slice, prefix, plen, after, alen, limit, cb, arg, NULL, NULL,
				  err, errlen);
}

/*
 * Every node lists a page of its keys with versions; the merge gives each
 * key once at its newest version and hides tombstones. A node that has
 * more keys bounds what is certain: only keys up to the smallest such
 * node's last key are given from this page, and the next page starts
 * after that bound (tombstones and replicas may leave a page short).
 */
SHELF_API int shelf_list_partial(struct shelf *s, const char *slice, const void *prefix,
				 size_t plen, const void *after, size_t alen, unsigned limit,
				 shelf_list_cb cb, void *arg, shelf_missing_cb missing,
				 void *missing_arg, char *err, size_t errlen)
{
	return sh_list(s, slice, prefix, plen, after, alen, limit, cb, arg, missing, missing_arg,
		       false, err, errlen);
}

/* A cursor inside the reserved keys jumps past all of them: fe x 8, then
 * 0xff up to the longest key, is the last key with the prefix. */
static void cursor_skip_reserved(uint8_t *cur, size_t *cur_len)
{
	if (!ovl_large_key_reserved(cur, *cur_len))
		return;
	memset(cur + OVL_LARGE_PREFIX_BYTES, 0xff,
	       OVL_WIRE_KEY_MAX_BYTES - OVL_LARGE_PREFIX_BYTES);
	*cur_len = OVL_WIRE_KEY_MAX_BYTES;
}

int sh_list(struct shelf *s, const char *slice, const void *prefix, size_t plen,
	    const void *after, size_t alen, unsigned limit, shelf_list_cb cb, void *arg,
	    shelf_missing_cb missing, void *missing_arg, bool reserved, char *err, size_t errlen)
{
	struct sh_map *m = NULL;
	struct vlist all = { 0 };
	uint8_t *cur = NULL, *bound = NULL, *last = NULL;
	size_t cur_len = alen, bound_len = 0, last_len = 0;
	char e2[768], text[INET6_ADDRSTRLEN];
	unsigned given = 0;
	bool retried = false, stop = false;
	int ret;

	sh_op_begin(s);
	if (!limit)
		limit = 1000;
	if (limit > OVL_WIRE_LIST_MAX || plen > OVL_WIRE_KEY_MAX_BYTES || alen > OVL_WIRE_KEY_MAX_BYTES)
		return sh_fail(err, errlen, -EINVAL, "ls: limit at most %u, prefix at most %u bytes",
			    OVL_WIRE_LIST_MAX, OVL_WIRE_KEY_MAX_BYTES);
	cur = malloc(OVL_WIRE_KEY_MAX_BYTES);
	bound = malloc(OVL_WIRE_KEY_MAX_BYTES);
	last = malloc(OVL_WIRE_KEY_MAX_BYTES);
	if (!cur || !bound || !last) {
		ret = -ENOMEM;
		goto out;
	}
	if (alen)
		memcpy(cur, after, alen);
	if (!reserved)
		cursor_skip_reserved(cur, &cur_len);
	ret = sh_map_fetch(s, slice, &m, err, errlen);
	if (ret < 0)
		goto out;
	while (!stop) {
		bool have_bound = false;

		vlist_clear(&all);
		/* every node holds part of the slice: ask each */
		for (uint32_t i = 0; i < m->msg.u.map.n_members; i++) {
			const struct ovl_msg_member *mb = &m->msg.u.map.members[i];
			bool more = false;
			uint64_t end, share;

			if (mb->state == OVL_MSG_STATE_OUT)
				continue;
			inet_ntop(AF_INET6, mb->addr, text, sizeof(text));
			/* each node gets an even share of the time left, so that one
			 * that does not answer leaves time for the others */
			end = s->deadline_ms;
			share = (uint64_t)sh_left_ms(s) / (m->msg.u.map.n_members - i);
			s->deadline_ms = ovl_mono_ms() + (share ? share : 1);
			ret = list_node(s, m, mb, slice, prefix, plen, cur, cur_len, limit - given,
					&all, &more, last, &last_len, e2, sizeof(e2));
			s->deadline_ms = end;
			if ((ret == -EHOSTUNREACH || ret == -EBUSY) && missing) {
				if (ret == -EHOSTUNREACH)
					member_lost(s, mb);
				missing(missing_arg, text, e2);
				ret = 0;
				continue;
			}
			if (ret == -ESTALE && !retried) {
				/* the slice moved on while we listed: fetch its map and
				 * list this page again, once */
				retried = true;
				ret = sh_map_fetch(s, slice, &m, err, errlen);
				if (ret < 0)
					goto out;
				vlist_clear(&all);
				have_bound = false;
				i = UINT32_MAX; /* the loop's i++ makes it 0 */
				continue;
			}
			if (ret < 0) {
				sh_fail(err, errlen, ret, "ls: %s", e2);
				goto out;
			}
			if (more && (!have_bound ||
				     bin_cmp(last, last_len, bound, bound_len) < 0)) {
				memcpy(bound, last, last_len);
				bound_len = last_len;
				have_bound = true;
			}
		}
		if (all.n) /* an empty page has no array (qsort's base must not be NULL) */
			qsort(all.e, all.n, sizeof(*all.e), vent_cmp);
		for (size_t i = 0; i < all.n && !stop; i++) {
			const struct vent *v = &all.e[i];

			if (i && bin_cmp(all.e[i - 1].key, all.e[i - 1].len, v->key, v->len) == 0)
				continue; /* an older version, or a replica's copy */
			if (have_bound && bin_cmp(v->key, v->len, bound, bound_len) > 0)
				break; /* past what every node has listed */
			if (v->tomb || (!reserved && ovl_large_key_reserved(v->key, v->len)))
				continue; /* deleted; libshelf's own (chunks, intents) */
			given++;
			if ((cb && cb(arg, v->key, v->len)) || given == limit)
				stop = true;
		}
		if (!have_bound)
			break;
		memcpy(cur, bound, bound_len);
		cur_len = bound_len;
		if (!reserved)
			cursor_skip_reserved(cur, &cur_len);
	}
	ret = (int)given;
out:
	vlist_clear(&all);
	free(all.e);
	free(cur);
	free(bound);
	free(last);
	return ret;
}

SHELF_API int shelf_add_node(struct shelf *s, const char *node, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *end;
	unsigned long port = SHELF_DATA_PORT_DEFAULT;
	struct sh_node_addr *na;

	if (s->nnodes >= SHELF_NODES_MAX)
		return sh_fail(err, errlen, -ENOSPC, "more than %d node addresses", SHELF_NODES_MAX);
	if (node[0] == '[') {
		char *pe = NULL;

		end = strchr(node, ']');
		if (!end || (size_t)(end - node - 1) >= sizeof(host) || end[1] != ':')
			goto bad;
		memcpy(host, node + 1, (size_t)(end - node - 1));
		host[end - node - 1] = 0;
		errno = 0;
		port = strtoul(end + 2, &pe, 10);
		if (errno || !end[2] || *pe || port < 1 || port > 65535)
			goto bad;
	} else {
		if (strlen(node) >= sizeof(host))
			goto bad;
		snprintf(host, sizeof(host), "%s", node);
	}
	na = &s->nodes[s->nnodes];
	if (inet_pton(AF_INET6, host, &na->addr) != 1)
		goto bad;
	na->port = (uint16_t)port;
	s->nnodes++;
	return 0;
bad:
	return sh_fail(err, errlen, -EINVAL, "node '%s': expected an IPv6 address or [ADDR]:PORT", node);
}

SHELF_API int shelf_map(struct shelf *s, const char *slice, struct shelf_map_info *info,
			struct shelf_member **members, char *err, size_t errlen)
{
	struct sh_map *m = NULL;
	struct shelf_member *out = NULL;
	const struct ovl_msg_map *mp;
	int ret;

	sh_op_begin(s);
	*members = NULL;
	memset(info, 0, sizeof(*info));
	if (!slice || !*slice)
		return sh_fail(err, errlen, -EINVAL, "no slice named");
	ret = sh_map_fetch(s, slice, &m, err, errlen);
	if (ret < 0)
		return ret;
	mp = &m->msg.u.map;
	if (mp->n_members && !(out = calloc(mp->n_members, sizeof(*out))))
		return -ENOMEM;
	for (uint32_t i = 0; i < mp->n_members; i++) {
		const struct ovl_msg_member *mb = &mp->members[i];
		const char *st = ovl_msg_state_name(mb->state);

		memcpy(out[i].id, mb->id, sizeof(out[i].id));
		inet_ntop(AF_INET6, mb->addr, out[i].addr, sizeof(out[i].addr));
		out[i].port = mb->port;
		out[i].state = st ? st : "unknown";
		out[i].capacity = mb->capacity;
		snprintf(out[i].site, sizeof(out[i].site), "%s", mb->domain.site);
		snprintf(out[i].chassis, sizeof(out[i].chassis), "%s", mb->domain.chassis);
		snprintf(out[i].slot, sizeof(out[i].slot), "%s", mb->domain.slot);
	}
	info->epoch = mp->epoch;
	info->replicas = mp->replicas;
	info->encrypt = mp->encrypt;
	info->n_members = mp->n_members;
	info->chunk_size = ovl_msg_map_chunk_size(mp);
	snprintf(info->source, sizeof(info->source), "%.95s", s->map_source);
	*members = out;
	return 0;
}

/* One request without a payload to the node at addr:port, answered with
 * counters (NODE_STAT, HEAL): up to cap of them into out; their number or
 * -errno. */
static int node_counters_call(struct shelf *s, uint8_t type, struct ovl_wire_req *q,
			      const char *what, const char *addr, uint16_t port,
			      struct shelf_counter *out, unsigned cap, char *err, size_t errlen)
{
	struct ovl_wire_resp *r = NULL;
	struct in6_addr a;
	struct sh_conn *c = NULL;
	char e2[384];
	int ret;

	if (!q->slice[0] || inet_pton(AF_INET6, addr, &a) != 1)
		return sh_fail(err, errlen, -EINVAL, "%s: a slice and an IPv6 address are needed", what);
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	sh_op_begin(s);
	q->epoch = UINT64_MAX; /* never stale: neither depends on the client's placement */
	ret = sh_conn_get(s, (const uint8_t *)&a, port, q->slice, &c, e2, sizeof(e2));
	if (ret == 0)
		ret = sh_call(s, c, type, q, NULL, 0, false, r, NULL, NULL, e2, sizeof(e2));
	if (ret == 0 && r->status != OVL_WIRE_OK) {
		ret = ovl_wire_status_to_errno(r->status);
		snprintf(e2, sizeof(e2), "node %s: %s%s%s", addr,
			 ovl_wire_status_name(r->status) ? ovl_wire_status_name(r->status) : "error",
			 r->message[0] ? ": " : "", r->message);
	}
	if (ret < 0) {
		sh_fail(err, errlen, ret, "%s: %s", what, e2);
		goto out;
	}
	for (uint32_t i = 0; i < r->ncounters && i < cap; i++) {
		snprintf(out[i].name, sizeof(out[i].name), "%s", r->counters[i].name);
		out[i].value = r->counters[i].value;
	}
	ret = (int)(r->ncounters < cap ? r->ncounters : cap);
out:
	free(r);
	return ret;
}

SHELF_API int shelf_node_stat(struct shelf *s, const char *slice, const char *addr, uint16_t port,
			      struct shelf_counter *out, unsigned cap, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };

	if (!slice || !*slice)
		return sh_fail(err, errlen, -EINVAL, "node-stat: a slice and an IPv6 address are needed");
	snprintf(q.slice, sizeof(q.slice), "%s", slice);
	return node_counters_call(s, OVL_WIRE_T_NODE_STAT, &q, "node-stat", addr, port, out, cap,
				  err, errlen);
}

SHELF_API int shelf_heal(struct shelf *s, const char *slice, const char *addr, uint16_t port,
			 const struct shelf_heal_opts *o, struct shelf_counter *out, unsigned cap,
			 char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };

	if (!slice || !*slice)
		return sh_fail(err, errlen, -EINVAL, "heal: a slice and an IPv6 address are needed");
	if (o && o->has_duty && (o->duty < 1 || o->duty > 100))
		return sh_fail(err, errlen, -EINVAL, "heal: duty %u%% is not 1..100", o->duty);
	snprintf(q.slice, sizeof(q.slice), "%s", slice);
	if (o) {
		q.check_only = o->check_only;
		q.has_rate = o->has_rate;
		q.rate = o->rate;
		q.has_duty = o->has_duty;
		q.duty = o->duty;
	}
	return node_counters_call(s, OVL_WIRE_T_HEAL, &q, "heal", addr, port, out, cap, err,
				  errlen);
}

SHELF_API uint32_t shelf_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return ovl_crc32c(crc, buf, len);
}

SHELF_API void shelf_free(void *p)
{
	free(p);
}
