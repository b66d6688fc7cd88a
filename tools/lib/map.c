/* libshelf's slice maps: fetched from the broker (or, when no broker
 * answers, from the nodes), cached in the client directory, decoded and
 * checked against the broker's signature; and placement lookups. */
#include <arpa/inet.h>
#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "shelf_int.h"

/* ---- maps from the broker, cached in the client directory ---- */

static void cache_path(const struct shelf *s, const char *slice, char *out, size_t len)
{
	snprintf(out, len, "%s/cache/%s.map", s->dir, slice);
}

/* Keep the map for when no broker answers (crash-safely; a failure only
 * costs the next start without a broker). */
static void cache_store(const struct shelf *s, const char *slice, const uint8_t *buf, size_t len)
{
	char path[700], e[256];

	snprintf(path, sizeof(path), "%s/cache", s->dir);
	mkdir(path, 0700);
	cache_path(s, slice, path, sizeof(path));
	ovl_file_write_atomic(path, buf, len, 0644, e, sizeof(e));
}

/* Decode a map (from the broker, a node or the cache) into m and check the
 * broker's signature over it. */
static int map_decode(const struct shelf *s, struct sh_map *m, const char *slice, size_t len,
		      char *err, size_t errlen)
{
	char e2[256];
	int ret = ovl_msg_decode(m->buf, len, &m->msg, e2, sizeof(e2));

	if (ret < 0)
		return sh_fail(err, errlen, -EBADMSG, "map of slice '%s': %s", slice, e2);
	if (m->msg.type == OVL_MSG_ERROR) {
		ret = m->msg.u.error.code == OVL_MSG_ERR_NOT_FOUND ? -ENOENT : -EACCES;
		sh_fail(err, errlen, ret, "slice '%s': %s", slice, m->msg.u.error.message);
		ovl_msg_release(&m->msg);
		return ret;
	}
	if (m->msg.type != OVL_MSG_MAP || strcmp(m->msg.u.map.slice, slice) != 0) {
		ovl_msg_release(&m->msg);
		return sh_fail(err, errlen, -EBADMSG, "expected the map of slice '%s'", slice);
	}
	if (ovl_msg_map_verify(&m->msg.u.map, s->broker_sign_pk) < 0) {
		ret = sh_fail(err, errlen, -EKEYREJECTED, "map of slice '%s' epoch %llu: %s", slice,
			   (unsigned long long)m->msg.u.map.epoch,
			   ovl_mem_is_zero(m->msg.u.map.sig, sizeof(m->msg.u.map.sig))
				   ? "not signed by a broker"
				   : "the broker's signature does not verify");
		ovl_msg_release(&m->msg);
		return ret;
	}
	snprintf(m->slice, sizeof(m->slice), "%s", slice);
	m->len = len;
	m->valid = true;
	return 0;
}

static int cache_load(struct shelf *s, struct sh_map *m, const char *slice, char *err, size_t errlen)
{
	char path[700];
	size_t len = 0;

	cache_path(s, slice, path, sizeof(path));
	if (sh_read_file(path, m->buf, SHELF_MAP_MAX_BYTES, &len) < 0)
		return -ENOENT;
	return map_decode(s, m, slice, len, err, errlen);
}

static int broker_fetch(struct shelf *s, struct sh_map *m, const char *slice, int budget_ms,
			char *err, size_t errlen);

static int nodes_fetch(struct shelf *s, struct sh_map *m, const char *slice, char *err,
		       size_t errlen);

/* Milliseconds until end (ovl_mono_ms), at least 1. */
static int left_of(uint64_t end)
{
	uint64_t now = ovl_mono_ms();

	return now >= end ? 1 : (int)(end - now);
}

/*
 * The map held before a fetch, into h (which gets its own buffer): m when
 * it is valid, else the cached one. false when there is none.
 */
static bool held_load(struct shelf *s, const struct sh_map *m, const char *slice, struct sh_map *h)
{
	char e[256];

	h->buf = malloc(SHELF_MAP_MAX_BYTES);
	if (!h->buf)
		return false;
	if (!m->valid)
		return cache_load(s, h, slice, e, sizeof(e)) == 0;
	memcpy(h->buf, m->buf, m->len);
	return map_decode(s, h, slice, m->len, e, sizeof(e)) == 0;
}

/*
 * Whether the map just fetched into m may replace `held`
 * (ovl_map_succession_check, docs/PROTOCOL.md 6.5). When it may not, m
 * gets the held map back: an older fetched map quietly (the client keeps
 * the newer one it has), one that drops members without a record with a
 * warning. Returns true when m is the fetched map, or -errno.
 */
static int map_succeed(struct shelf *s, struct sh_map *m, struct sh_map *held, const char *slice,
		       char *err, size_t errlen)
{
	char e[512], w[768];
	int rc;

	if (m->msg.u.map.epoch == held->msg.u.map.epoch)
		return true; /* the same epoch: the same map */
	rc = ovl_map_succession_check(&held->msg.u.map, &m->msg.u.map, e, sizeof(e));
	if (rc == 0)
		return true;
	if (rc != -ESTALE && s->warn) {
		snprintf(w, sizeof(w), "refusing the map from %s: %s; keeping epoch %llu", s->map_source,
			 e, (unsigned long long)held->msg.u.map.epoch);
		s->warn(s->warn_arg, w);
	}
	ovl_msg_release(&m->msg);
	m->valid = false;
	memcpy(m->buf, held->buf, held->len);
	rc = map_decode(s, m, slice, held->len, err, errlen);
	return rc < 0 ? rc : false;
}

/*
 * The map from the broker; when no broker answers, the newest of the
 * cached one and those nodes hold (the nodes given with shelf_add_node()
 * and the members of the cached map). A map that may not replace the one
 * held (see map_succeed) leaves the held one in place.
 */
int sh_map_fetch(struct shelf *s, const char *slice, struct sh_map **out, char *err, size_t errlen)
{
	struct sh_map *m = NULL, held = { 0 };
	bool have_held, from_broker = false;
	char e3[768];
	int ret;

	for (unsigned i = 0; i < SHELF_SLICES_MAX && !m; i++)
		if (!s->maps[i].slice[0] || strcmp(s->maps[i].slice, slice) == 0)
			m = &s->maps[i];
	if (!m)
		m = &s->maps[0];
	have_held = held_load(s, m, slice, &held);
	if (m->valid)
		ovl_msg_release(&m->msg);
	m->valid = false;
	if (!m->buf && !(m->buf = malloc(SHELF_MAP_MAX_BYTES))) {
		ret = -ENOMEM;
		goto out;
	}
	if (s->broker[0]) {
		/* when nodes can be asked instead (given ones, or the members of a
		 * map held), the broker gets half of the time left, not all of it */
		int budget = sh_left_ms(s);

		if ((s->nnodes || have_held) && budget > 1)
			budget /= 2;
		ret = broker_fetch(s, m, slice, budget, err, errlen);
		from_broker = ret == 0;
	} else
		ret = sh_fail(err, errlen, -EHOSTUNREACH, "no broker given");
	if (ret == -EHOSTUNREACH) {
		/* the broker is out of the data path: keep going */
		int r2 = nodes_fetch(s, m, slice, e3, sizeof(e3));

		if (r2 == 0) {
			ret = 0;
		} else {
			char e4[SHELF_ERR_BYTES];

			snprintf(e4, sizeof(e4), "%s", err);
			sh_fail(err, errlen, ret, "%s; %s", e4, e3);
		}
	}
	if (ret == 0 && have_held) {
		int r = map_succeed(s, m, &held, slice, err, errlen);

		ret = r < 0 ? r : 0;
		from_broker = from_broker && r == true;
	}
	if (ret == 0 && from_broker)
		cache_store(s, slice, m->buf, m->len);
	if (ret == 0)
		*out = m;
out:
	if (have_held)
		ovl_msg_release(&held.msg);
	free(held.buf);
	return ret;
}

static int broker_fetch(struct shelf *s, struct sh_map *m, const char *slice, int budget_ms,
			char *err, size_t errlen)
{
	uint64_t end = ovl_mono_ms() + (uint64_t)budget_ms;
	struct ovl_link_opts lo = ovl_link_opts_default;
	struct ovl_link_client_cfg cfg = { 0 };
	struct ovl_msg req;
	msgpack_sbuffer sb;
	char e2[256];
	int ret;

	if (!s->link) {
		s->zctx = s->zctx ? s->zctx : zmq_ctx_new();
		lo.max_msg_bytes = SHELF_MAP_MAX_BYTES;
		lo.linger_ms = 0;
		cfg.endpoint = s->broker;
		cfg.server_key = s->broker_key;
		cfg.secret_key = s->id->curve_sk;
		cfg.opts = &lo;
		if (!s->zctx || ovl_link_client_new(&s->link, s->zctx, &cfg, e2, sizeof(e2)) < 0)
			return sh_fail(err, errlen, -EHOSTUNREACH, "cannot reach broker '%s': %s", s->broker, e2);
		ret = ovl_link_client_wait_ready(s->link, budget_ms, e2, sizeof(e2));
		if (ret < 0) {
			ovl_link_client_destroy(&s->link);
			return sh_fail(err, errlen, -EHOSTUNREACH, "cannot reach broker '%s': %s", s->broker, e2);
		}
	}
	ovl_msg_init(&req, OVL_MSG_MAP_GET);
	snprintf(req.u.map_get.slice, sizeof(req.u.map_get.slice), "%s", slice);
	req.rid = 1;
	msgpack_sbuffer_init(&sb);
	ret = ovl_msg_encode(&req, &sb, e2, sizeof(e2));
	if (ret == 0)
		ret = ovl_link_client_send(s->link, sb.data, sb.size, left_of(end));
	msgpack_sbuffer_destroy(&sb);
	if (ret < 0)
		return sh_fail(err, errlen, -EHOSTUNREACH, "cannot send to broker '%s'", s->broker);
	ret = ovl_link_client_recv(s->link, m->buf, SHELF_MAP_MAX_BYTES, left_of(end));
	if (ret < 0) {
		ovl_link_client_destroy(&s->link); /* a late answer must not be read as the next */
		return sh_fail(err, errlen, -EHOSTUNREACH, "broker '%s' did not answer within %d ms",
			    s->broker, budget_ms);
	}
	{
		size_t len = (size_t)ret;

		ret = map_decode(s, m, slice, len, err, errlen);
		if (ret == 0) {
			snprintf(s->map_source, sizeof(s->map_source), "broker %.80s", s->broker);
		}
	}
	return ret;
}

/*
 * The map to use: the one in memory, else the cached one (nodes answer
 * stale-map when it is behind, and then it is fetched again), else the
 * broker's.
 */
int sh_map_get(struct shelf *s, const char *slice, struct sh_map **out, char *err, size_t errlen)
{
	struct sh_map *free_slot = NULL;
	char e2[256];

	for (unsigned i = 0; i < SHELF_SLICES_MAX; i++) {
		if (s->maps[i].valid && strcmp(s->maps[i].slice, slice) == 0) {
			*out = &s->maps[i];
			return 0;
		}
		if (!free_slot && !s->maps[i].valid)
			free_slot = &s->maps[i];
	}
	if (free_slot && (free_slot->buf || (free_slot->buf = malloc(SHELF_MAP_MAX_BYTES))) &&
	    cache_load(s, free_slot, slice, e2, sizeof(e2)) == 0) {
		*out = free_slot;
		return 0;
	}
	return sh_map_fetch(s, slice, out, err, errlen);
}

/* The member holding key (the primary, by placement over members up). */
int sh_map_locate(const struct sh_map *m, const void *key, size_t klen,
		  const struct ovl_msg_member **out, char *err, size_t errlen)
{
	const struct ovl_msg_map *mp = &m->msg.u.map;
	struct ovl_place_member *pm = calloc(mp->n_members ? mp->n_members : 1, sizeof(*pm));
	unsigned pick = 0;
	int n;

	if (!pm)
		return -ENOMEM;
	for (uint32_t i = 0; i < mp->n_members; i++) {
		memcpy(pm[i].id, mp->members[i].id, 32);
		/* out members hold no data: placement leaves them out */
		pm[i].weight = mp->members[i].state == OVL_MSG_STATE_OUT ? 0 : mp->members[i].capacity;
		pm[i].site = mp->members[i].domain.site;
		pm[i].chassis = mp->members[i].domain.chassis;
		pm[i].slot = mp->members[i].domain.slot;
	}
	n = ovl_place(pm, mp->n_members, key, klen, 1, &pick);
	free(pm);
	if (n <= 0)
		return sh_fail(err, errlen, -EHOSTUNREACH, "slice '%s' has no member to hold objects",
			    m->slice);
	*out = &mp->members[pick];
	return 0;
}

/* ---- node connections ---- */
/* Replace m with the map in buf[0..len) when it verifies and is newer. */
static bool map_offer(struct shelf *s, struct sh_map *m, const char *slice, uint8_t *buf, size_t len,
		      const char *source, char *err, size_t errlen)
{
	struct sh_map t = { .buf = buf };

	if (len >= SHELF_MAP_MAX_BYTES || map_decode(s, &t, slice, len, err, errlen) < 0)
		return false;
	if (m->valid && t.msg.u.map.epoch <= m->msg.u.map.epoch) {
		ovl_msg_release(&t.msg);
		return false;
	}
	ovl_msg_release(&t.msg);
	if (m->valid)
		ovl_msg_release(&m->msg);
	m->valid = false;
	memcpy(m->buf, buf, len);
	if (map_decode(s, m, slice, len, err, errlen) < 0)
		return false;
	snprintf(s->map_source, sizeof(s->map_source), "%s", source);
	return true;
}

static int nodes_fetch(struct shelf *s, struct sh_map *m, const char *slice, char *err,
		       size_t errlen)
{
	struct sh_node_addr *cand = NULL;
	unsigned ncand = 0, answers = 0;
	char e2[768] = "no node address known (give one with --node or SHELF_NODES)";
	char text[INET6_ADDRSTRLEN + 16];
	bool from_node = false;
	size_t cap;

	{
		char ec[256]; /* a cache that does not verify is only a missed chance */

		if (cache_load(s, m, slice, ec, sizeof(ec)) == 0)
			snprintf(s->map_source, sizeof(s->map_source), "cache");
	}
	cap = 1 + s->nnodes + (m->valid ? m->msg.u.map.n_members : 0);
	cand = calloc(cap, sizeof(*cand));
	if (!cand)
		return -ENOMEM;
	if (s->has_hint)
		cand[ncand++] = s->hint; /* it said stale-map: it holds a newer map */
	for (unsigned i = 0; i < s->nnodes; i++)
		cand[ncand++] = s->nodes[i];
	for (uint32_t i = 0; m->valid && i < m->msg.u.map.n_members; i++) {
		const struct ovl_msg_member *mb = &m->msg.u.map.members[i];

		if (mb->state == OVL_MSG_STATE_OUT)
			continue;
		memcpy(&cand[ncand].addr, mb->addr, 16);
		cand[ncand++].port = mb->port;
	}
	for (unsigned i = 0; i < ncand && answers < SHELF_MAP_ANSWERS; i++) {
		struct ovl_wire_req q = { 0 };
		struct ovl_wire_resp r;
		struct sh_conn *c = NULL;
		uint8_t *body = NULL;
		size_t blen = 0;
		uint64_t end;
		int ret;

		inet_ntop(AF_INET6, &cand[i].addr, text, INET6_ADDRSTRLEN);
		snprintf(q.slice, sizeof(q.slice), "%s", slice);
		q.epoch = m->valid ? m->msg.u.map.epoch : 0;
		/* an even share of the time left each, so that a node that does
		 * not answer leaves time for the others */
		end = s->deadline_ms;
		if (end)
			s->deadline_ms = ovl_mono_ms() + (uint64_t)sh_left_ms(s) / (ncand - i);
		ret = sh_conn_get(s, (const uint8_t *)&cand[i].addr, cand[i].port, slice, &c, e2,
			       sizeof(e2));
		if (ret == 0)
			ret = sh_call(s, c, OVL_WIRE_T_MAP, &q, NULL, 0, false, &r, &body, &blen, e2,
				   sizeof(e2));
		s->deadline_ms = end;
		if (ret == 0 && r.status != OVL_WIRE_OK) {
			ret = ovl_wire_status_to_errno(r.status);
			snprintf(e2, sizeof(e2), "node %s: %s: %s", text,
				 ovl_wire_status_name(r.status) ? ovl_wire_status_name(r.status) : "error",
				 r.message);
		} else if (ret == 0 && r.has_crc && ovl_crc32c(0, body, blen) != r.crc) {
			ret = -EIO;
			snprintf(e2, sizeof(e2), "node %s: map checksum mismatch in transit", text);
		}
		if (ret == 0) {
			char src[96], e3[256] = "";

			snprintf(src, sizeof(src), "node %s", text);
			answers++;
			if (map_offer(s, m, slice, body, blen, src, e3, sizeof(e3)))
				from_node = true;
			else if (e3[0])
				snprintf(e2, sizeof(e2), "node %s: %s", text, e3);
		}
		free(body);
	}
	free(cand);
	if (!m->valid)
		return sh_fail(err, errlen, -EHOSTUNREACH, "no map of slice '%s' from any node: %s", slice,
			    e2);
	if (from_node)
		cache_store(s, slice, m->buf, m->len); /* for the next start without broker */
	return 0;
}

void sh_maps_release(struct shelf *s)
{
	for (unsigned i = 0; i < SHELF_SLICES_MAX; i++) {
		if (s->maps[i].valid)
			ovl_msg_release(&s->maps[i].msg);
		free(s->maps[i].buf);
		s->maps[i].buf = NULL;
		s->maps[i].valid = false;
	}
}
