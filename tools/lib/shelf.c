/* libshelf's public API (tools/shelf.h): opening a client, and the object
 * operations on top of the maps (map.c) and the node connections
 * (client.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

SHELF_API int shelf_put(struct shelf *s, const char *slice, const void *key, size_t klen,
			const void *data, size_t len, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;

	q.size = len;
	q.crc = ovl_crc32c(0, data, len);
	return keyed(s, "put", slice, OVL_WIRE_T_PUT, key, klen, &q, data, len, &r, NULL, NULL, err,
		     errlen);
}

SHELF_API int shelf_get(struct shelf *s, const char *slice, const void *key, size_t klen,
			uint64_t off, uint64_t len, void **data, size_t *dlen, uint64_t *total,
			char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;
	uint8_t *body = NULL;
	size_t blen = 0;
	int ret;

	*data = NULL;
	*dlen = 0;
	if (off || len != UINT64_MAX) {
		q.has_range = true;
		q.offset = off;
		/* to the end: no object is longer than the largest length */
		q.length = len == UINT64_MAX ? OVL_WIRE_OBJECT_MAX_BYTES : len;
	}
	ret = keyed(s, "get", slice, OVL_WIRE_T_GET, key, klen, &q, NULL, 0, &r, &body, &blen, err,
		    errlen);
	if (ret < 0)
		return ret;
	/* end to end: what arrived is what the node read and verified */
	if (r.has_crc && ovl_crc32c(0, body, blen) != r.crc) {
		free(body);
		return sh_fail(err, errlen, -EIO, "get '%.*s': payload checksum mismatch in transit",
			    (int)(klen < 64 ? klen : 64), (const char *)key);
	}
	*data = body ? body : malloc(1);
	*dlen = blen;
	if (total)
		*total = r.size;
	return 0;
}

SHELF_API int shelf_delete(struct shelf *s, const char *slice, const void *key, size_t klen,
			   char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;

	return keyed(s, "rm", slice, OVL_WIRE_T_DELETE, key, klen, &q, NULL, 0, &r, NULL, NULL, err,
		     errlen);
}

SHELF_API int shelf_stat(struct shelf *s, const char *slice, const void *key, size_t klen,
			 struct shelf_objstat *st, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp r;
	int ret = keyed(s, "stat", slice, OVL_WIRE_T_STAT, key, klen, &q, NULL, 0, &r, NULL, NULL,
			err, errlen);

	if (ret == 0) {
		st->size = r.size;
		st->crc = r.crc;
		st->seq = r.seq;
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

struct klist {
	struct ovl_wire_bin *k;
	uint8_t **owned;
	size_t n, cap;
};

static int kcmp(const void *a, const void *b)
{
	const struct ovl_wire_bin *x = a, *y = b;
	int c = memcmp(x->ptr, y->ptr, x->len < y->len ? x->len : y->len);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

SHELF_API int shelf_list(struct shelf *s, const char *slice, const void *prefix, size_t plen,
			 const void *after, size_t alen, unsigned limit, shelf_list_cb cb,
			 void *arg, char *err, size_t errlen)
{
	return shelf_list_partial(s, slice, prefix, plen, after, alen, limit, cb, arg, NULL, NULL,
				  err, errlen);
}

SHELF_API int shelf_list_partial(struct shelf *s, const char *slice, const void *prefix,
				 size_t plen, const void *after, size_t alen, unsigned limit,
				 shelf_list_cb cb, void *arg, shelf_missing_cb missing,
				 void *missing_arg, char *err, size_t errlen)
{
	struct sh_map *m = NULL;
	struct klist all = { 0 };
	char e2[768], text[INET6_ADDRSTRLEN];
	unsigned given = 0;
	bool retried = false;
	int ret;

	sh_op_begin(s);
	if (!limit)
		limit = 1000;
	if (limit > OVL_WIRE_LIST_MAX || plen > OVL_WIRE_KEY_MAX_BYTES || alen > OVL_WIRE_KEY_MAX_BYTES)
		return sh_fail(err, errlen, -EINVAL, "ls: limit at most %u, prefix at most %u bytes",
			    OVL_WIRE_LIST_MAX, OVL_WIRE_KEY_MAX_BYTES);
	ret = sh_map_fetch(s, slice, &m, err, errlen);
	if (ret < 0)
		return ret;
again:
	/* every node holds part of the slice: ask each, merge in key order */
	for (uint32_t i = 0; i < m->msg.u.map.n_members; i++) {
		const struct ovl_msg_member *mb = &m->msg.u.map.members[i];
		struct ovl_wire_req q = { 0 };
		struct ovl_wire_resp r;
		struct ovl_wire_bin *keys = NULL;
		uint32_t nk = 0;
		struct sh_conn *c = NULL;
		uint8_t *body = NULL;
		size_t blen = 0;
		uint64_t end, share;

		if (mb->state == OVL_MSG_STATE_OUT)
			continue;
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
		/* each node gets an even share of the time left, so that one that
		 * does not answer leaves time for the others */
		end = s->deadline_ms;
		share = (uint64_t)sh_left_ms(s) / (m->msg.u.map.n_members - i);
		s->deadline_ms = ovl_mono_ms() + (share ? share : 1);
		ret = sh_conn_get(s, mb->addr, mb->port, slice, &c, e2, sizeof(e2));
		if (ret == 0)
			ret = sh_call(s, c, OVL_WIRE_T_LIST, &q, NULL, 0, m->msg.u.map.encrypt, &r, &body,
				   &blen, e2, sizeof(e2));
		s->deadline_ms = end;
		if (ret == 0 && r.status != OVL_WIRE_OK) {
			ret = ovl_wire_status_to_errno(r.status);
			snprintf(e2, sizeof(e2), "node %s: %s%s%s", text,
				 ovl_wire_status_name(r.status) ? ovl_wire_status_name(r.status) : "error",
				 r.message[0] ? ": " : "", r.message);
		}
		if (ret == 0)
			ret = ovl_wire_keys_decode(body, blen, &keys, &nk, e2, sizeof(e2));
		if (ret == -EHOSTUNREACH && missing) {
			missing(missing_arg, text, e2);
			free(body);
			ret = 0;
			continue;
		}
		if (ret == -ESTALE && !retried) {
			/* the slice moved on while we listed: fetch its map and list
			 * again from the start, once (a node already named as not
			 * answering may be named again) */
			free(body);
			retried = true;
			for (size_t k = 0; k < all.n; k++)
				free(all.owned[k]);
			all.n = 0;
			ret = sh_map_fetch(s, slice, &m, err, errlen);
			if (ret < 0)
				goto out;
			goto again;
		}
		if (ret < 0) {
			free(body);
			sh_fail(err, errlen, ret, "ls: %s", e2);
			goto out;
		}
		for (uint32_t j = 0; j < nk; j++) {
			uint8_t *copy = malloc(keys[j].len);

			if (all.n == all.cap) {
				size_t cap = all.cap ? all.cap * 2 : 256;
				void *a = realloc(all.k, cap * sizeof(*all.k));
				void *o = realloc(all.owned, cap * sizeof(*all.owned));

				if (a)
					all.k = a;
				if (o)
					all.owned = o;
				if (!a || !o || !copy) {
					free(copy);
					free(keys);
					free(body);
					ret = -ENOMEM;
					goto out;
				}
				all.cap = cap;
			}
			memcpy(copy, keys[j].ptr, keys[j].len);
			all.k[all.n].ptr = copy;
			all.k[all.n].len = keys[j].len;
			all.owned[all.n++] = copy;
		}
		free(keys);
		free(body);
	}
	qsort(all.k, all.n, sizeof(*all.k), kcmp);
	for (size_t i = 0; i < all.n && given < limit; i++) {
		if (i && kcmp(&all.k[i - 1], &all.k[i]) == 0)
			continue; /* a replica's copy */
		given++;
		if (cb && cb(arg, all.k[i].ptr, all.k[i].len))
			break;
	}
	ret = (int)given;
out:
	for (size_t i = 0; i < all.n; i++)
		free(all.owned[i]);
	free(all.k);
	free(all.owned);
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
	snprintf(info->source, sizeof(info->source), "%.95s", s->map_source);
	*members = out;
	return 0;
}

SHELF_API int shelf_node_stat(struct shelf *s, const char *slice, const char *addr, uint16_t port,
			      struct shelf_counter *out, unsigned cap, char *err, size_t errlen)
{
	struct ovl_wire_req q = { 0 };
	struct ovl_wire_resp *r = NULL;
	struct in6_addr a;
	struct sh_conn *c = NULL;
	char e2[384];
	int ret;

	if (!slice || !*slice || inet_pton(AF_INET6, addr, &a) != 1)
		return sh_fail(err, errlen, -EINVAL, "node-stat: a slice and an IPv6 address are needed");
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	sh_op_begin(s);
	snprintf(q.slice, sizeof(q.slice), "%s", slice);
	q.epoch = UINT64_MAX; /* never stale: NODE_STAT does not depend on placement */
	ret = sh_conn_get(s, (const uint8_t *)&a, port, slice, &c, e2, sizeof(e2));
	if (ret == 0)
		ret = sh_call(s, c, OVL_WIRE_T_NODE_STAT, &q, NULL, 0, false, r, NULL, NULL, e2,
			   sizeof(e2));
	if (ret == 0 && r->status != OVL_WIRE_OK) {
		ret = ovl_wire_status_to_errno(r->status);
		snprintf(e2, sizeof(e2), "node %s: %s%s%s", addr,
			 ovl_wire_status_name(r->status) ? ovl_wire_status_name(r->status) : "error",
			 r->message[0] ? ": " : "", r->message);
	}
	if (ret < 0) {
		sh_fail(err, errlen, ret, "node-stat: %s", e2);
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
