#include "msg_samples.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Backing storage for the bins of the samples (test code only). */
static uint8_t bins[16][OVL_MSG_OPAQUE_MAX_BYTES];

void msg_sample_bytes(uint8_t *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)((seed + 7 * i) & 0xff);
}

static struct ovl_msg_bin bin(unsigned slot, unsigned seed, size_t n)
{
	struct ovl_msg_bin b = { bins[slot], n };

	msg_sample_bytes(bins[slot], n, seed);
	return b;
}

static void domain(struct ovl_msg_domain *d, const char *site, const char *chassis,
		   const char *slot)
{
	snprintf(d->site, sizeof(d->site), "%s", site);
	snprintf(d->chassis, sizeof(d->chassis), "%s", chassis);
	snprintf(d->slot, sizeof(d->slot), "%s", slot);
}

static struct ovl_msg_slice *slices(unsigned n, const char *const *names, const uint64_t *epochs)
{
	struct ovl_msg_slice *s = calloc(n, sizeof(*s));

	for (unsigned i = 0; s && i < n; i++) {
		snprintf(s[i].name, sizeof(s[i].name), "%s", names[i]);
		s[i].epoch = epochs[i];
	}
	return s;
}

void msg_sample_member(struct ovl_msg_member *mb, unsigned i)
{
	char chassis[16], slot[16];

	memset(mb, 0, sizeof(*mb));
	msg_sample_bytes(mb->id, sizeof(mb->id), 10 + i);
	msg_sample_bytes(mb->curve_key, sizeof(mb->curve_key), 50 + i);
	msg_sample_bytes(mb->addr, sizeof(mb->addr), 90 + i);
	mb->port = (uint16_t)(7100 + i % 1000);
	snprintf(chassis, sizeof(chassis), "c%02u", i / 24);
	snprintf(slot, sizeof(slot), "%u", i % 24);
	domain(&mb->domain, "lab-1", chassis, slot);
	mb->capacity = 4000787030016ull + i;
	mb->state = (enum ovl_msg_state)(1 + i % 3);
}

static struct ovl_msg_member *members(unsigned n, unsigned first)
{
	struct ovl_msg_member *m = calloc(n, sizeof(*m));

	for (unsigned i = 0; m && i < n; i++)
		msg_sample_member(&m[i], first + i);
	return m;
}

static const char *const sample_names[] = {
	"register", "register_min", "register_ok", "heartbeat", "heartbeat_ok", "map_get",
	"map", "map_big", "map_delta", "cert_renew", "cert", "error", "admin", "admin_ok",
	"map_report", "map_def",
};

int msg_sample_count(void)
{
	return (int)(sizeof(sample_names) / sizeof(sample_names[0]));
}

const char *msg_sample_build(int i, struct ovl_msg *m)
{
	static const char *const names2[] = { "alpha", "beta" };
	const char *name = NULL;

	if (i < 0 || i >= msg_sample_count())
		return NULL;
	name = sample_names[i];
	if (strcmp(name, "register") == 0 || strcmp(name, "register_min") == 0) {
		static const uint64_t ep[] = { 7, 0 };
		struct ovl_msg_register *r = &m->u.reg;

		ovl_msg_init(m, OVL_MSG_REGISTER);
		msg_sample_bytes(r->node_id, sizeof(r->node_id), 1);
		msg_sample_bytes(r->curve_key, sizeof(r->curve_key), 2);
		snprintf(r->board, sizeof(r->board), "sim");
		snprintf(r->version, sizeof(r->version), "shelf 0.1.0");
		r->capacity = 4000787030016ull;
		domain(&r->domain, "lab-1", "c07", "12");
		r->port = 7100;
		if (strcmp(name, "register") == 0) {
			m->rid = 42;
			snprintf(r->token, sizeof(r->token), "enrol-3f9a1c");
			r->slices = slices(2, names2, ep);
			r->n_slices = 2;
		}
	} else if (strcmp(name, "register_ok") == 0) {
		static const uint64_t ep[] = { 8 };
		struct ovl_msg_register_ok *r = &m->u.reg_ok;

		ovl_msg_init(m, OVL_MSG_REGISTER_OK);
		m->rid = 42;
		r->ts = bin(0, 3, 64);
		r->cert = bin(1, 4, 300);
		r->heartbeat_ms = OVL_MSG_HEARTBEAT_MS;
		r->slices = slices(1, names2, ep);
		r->n_slices = 1;
	} else if (strcmp(name, "heartbeat") == 0) {
		ovl_msg_init(m, OVL_MSG_HEARTBEAT);
		msg_sample_bytes(m->u.hb.node_id, OVL_MSG_ID_BYTES, 1);
		m->u.hb.seq = 123456;
		m->u.hb.used = 1234567890;
	} else if (strcmp(name, "heartbeat_ok") == 0) {
		static const uint64_t ep[] = { 9, 2 };

		ovl_msg_init(m, OVL_MSG_HEARTBEAT_OK);
		m->u.hb_ok.ts = bin(2, 5, 64);
		m->u.hb_ok.seq = 123456;
		m->u.hb_ok.slices = slices(2, names2, ep);
		m->u.hb_ok.n_slices = 2;
	} else if (strcmp(name, "map_get") == 0) {
		ovl_msg_init(m, OVL_MSG_MAP_GET);
		m->rid = 43;
		snprintf(m->u.map_get.slice, sizeof(m->u.map_get.slice), "alpha");
		m->u.map_get.epoch = 7;
	} else if (strcmp(name, "map") == 0 || strcmp(name, "map_big") == 0) {
		unsigned n = strcmp(name, "map") == 0 ? 5 : 1000;

		ovl_msg_init(m, OVL_MSG_MAP);
		m->rid = 43;
		m->u.map.ts = bin(3, 6, 64);
		snprintf(m->u.map.slice, sizeof(m->u.map.slice), "alpha");
		m->u.map.epoch = 9;
		m->u.map.replicas = 3;
		m->u.map.members = members(n, 0);
		m->u.map.n_members = n;
	} else if (strcmp(name, "map_delta") == 0) {
		struct ovl_msg_map_delta *d = &m->u.delta;

		ovl_msg_init(m, OVL_MSG_MAP_DELTA);
		d->ts = bin(4, 7, 64);
		snprintf(d->slice, sizeof(d->slice), "alpha");
		d->base_epoch = 9;
		d->epoch = 10;
		d->members = members(1, 5);
		d->n_members = 1;
		d->removed = calloc(1, OVL_MSG_ID_BYTES);
		if (d->removed)
			msg_sample_bytes(d->removed[0], OVL_MSG_ID_BYTES, 11);
		d->n_removed = 1;
	} else if (strcmp(name, "map_def") == 0) {
		/* a map as its owning broker sends it: signed, with a removal
		 * record and the slice's definition (1.4) */
		ovl_msg_init(m, OVL_MSG_MAP);
		m->u.map.ts = bin(3, 6, 64);
		snprintf(m->u.map.slice, sizeof(m->u.map.slice), "alpha");
		m->u.map.epoch = 9;
		m->u.map.replicas = 3;
		m->u.map.members = members(2, 0);
		m->u.map.n_members = 2;
		msg_sample_bytes(m->u.map.sig, sizeof(m->u.map.sig), 14);
		m->u.map.left = calloc(1, sizeof(*m->u.map.left));
		if (m->u.map.left) {
			msg_sample_bytes(m->u.map.left[0].id, OVL_MSG_ID_BYTES, 15);
			m->u.map.left[0].epoch = 8;
			m->u.map.left[0].reason = OVL_MSG_LEFT_REVOKED;
			m->u.map.n_left = 1;
		}
		snprintf(m->u.map.selector, sizeof(m->u.map.selector), "board=sim");
		msg_sample_bytes(m->u.map.owner, OVL_MSG_ID_BYTES, 16);
	} else if (strcmp(name, "map_report") == 0) {
		struct ovl_msg_map *r = &m->u.report;

		ovl_msg_init(m, OVL_MSG_MAP_REPORT);
		snprintf(r->slice, sizeof(r->slice), "alpha");
		r->epoch = 9;
		r->replicas = 3;
		r->members = members(3, 0);
		r->n_members = 3;
		r->encrypt = true;
		msg_sample_bytes(r->sig, sizeof(r->sig), 14);
		r->left = calloc(1, sizeof(*r->left));
		if (r->left) {
			msg_sample_bytes(r->left[0].id, OVL_MSG_ID_BYTES, 15);
			r->left[0].epoch = 8;
			r->left[0].reason = OVL_MSG_LEFT_EXPIRED;
			r->n_left = 1;
		}
	} else if (strcmp(name, "cert_renew") == 0) {
		ovl_msg_init(m, OVL_MSG_CERT_RENEW);
		msg_sample_bytes(m->u.cert_renew.node_id, OVL_MSG_ID_BYTES, 1);
		m->u.cert_renew.cert = bin(5, 4, 300);
	} else if (strcmp(name, "cert") == 0) {
		ovl_msg_init(m, OVL_MSG_CERT);
		m->u.cert.ts = bin(6, 8, 64);
		m->u.cert.cert = bin(7, 9, OVL_MSG_OPAQUE_MAX_BYTES);
	} else if (strcmp(name, "error") == 0) {
		ovl_msg_init(m, OVL_MSG_ERROR);
		m->rid = 44;
		m->u.error.code = OVL_MSG_ERR_NOT_FOUND;
		snprintf(m->u.error.message, sizeof(m->u.error.message), "unknown slice 'gamma'");
		m->u.error.ts = bin(8, 12, 64);
	} else if (strcmp(name, "admin") == 0) {
		ovl_msg_init(m, OVL_MSG_ADMIN);
		m->rid = 45;
		m->u.admin.op = OVL_MSG_ADMIN_CREATE_SLICE;
		snprintf(m->u.admin.slice, sizeof(m->u.admin.slice), "gamma");
		m->u.admin.replicas = 2;
	} else if (strcmp(name, "admin_ok") == 0) {
		struct ovl_msg_admin_ok *a = &m->u.admin_ok;

		ovl_msg_init(m, OVL_MSG_ADMIN_OK);
		m->rid = 45;
		a->ts = bin(9, 13, 64);
		a->op = OVL_MSG_ADMIN_LIST_NODES;
		a->nodes = calloc(3, sizeof(*a->nodes));
		a->n_nodes = a->nodes ? 3 : 0;
		for (unsigned k = 0; k < a->n_nodes; k++) {
			struct ovl_msg_node_info *n = &a->nodes[k];
			char slot[16];

			msg_sample_bytes(n->id, sizeof(n->id), 10 + k);
			snprintf(n->board, sizeof(n->board), "sim");
			snprintf(n->version, sizeof(n->version), "shelf 0.1.%u", k);
			snprintf(slot, sizeof(slot), "%u", k);
			domain(&n->domain, "lab-1", "c00", slot);
			n->capacity = 1ull << 40;
			n->used = k * 1000000ull;
			n->state = (enum ovl_msg_state)(1 + k % 3);
			n->seen_ms = 250 * k;
		}
		a->slices = calloc(2, sizeof(*a->slices));
		a->n_slices = a->slices ? 2 : 0;
		for (unsigned k = 0; k < a->n_slices; k++) {
			snprintf(a->slices[k].name, sizeof(a->slices[k].name), "%s", names2[k]);
			a->slices[k].epoch = 9 + k;
			a->slices[k].replicas = 3 - k;
			a->slices[k].members = 24 + k;
		}
		a->stats = calloc(2, sizeof(*a->stats));
		a->n_stats = a->stats ? 2 : 0;
		if (a->stats) {
			snprintf(a->stats[0].name, sizeof(a->stats[0].name), "nodes");
			a->stats[0].value = 3;
			snprintf(a->stats[1].name, sizeof(a->stats[1].name), "slices");
			a->stats[1].value = 2;
		}
		a->epoch = 11;
	}
	return name;
}

static void dump_field(FILE *f, const char *path, const struct ovl_msg_field *fd,
		       const void *src);

static bool field_empty(const struct ovl_msg_field *fd, const void *src)
{
	const uint8_t *p = src;

	switch (fd->type) {
	case OVL_MSG_F_UINT:
		for (size_t i = 0; i < fd->size; i++)
			if (p[i])
				return false;
		return true;
	case OVL_MSG_F_BOOL:
		return !*(const bool *)src;
	case OVL_MSG_F_STR:
		return p[0] == 0;
	case OVL_MSG_F_FIXBIN:
		for (size_t i = 0; i < fd->size; i++)
			if (p[i])
				return false;
		return true;
	case OVL_MSG_F_BIN:
		return ((const struct ovl_msg_bin *)src)->len == 0;
	case OVL_MSG_F_ENUM:
		return *(const int *)src == 0;
	case OVL_MSG_F_STRUCT:
		for (unsigned i = 0; i < fd->sub->nfields; i++)
			if (!field_empty(&fd->sub->fields[i], p + fd->sub->fields[i].offset))
				return false;
		return true;
	default:
		return *(const uint32_t *)(p - fd->offset + fd->count_offset) == 0;
	}
}

static void dump_struct(FILE *f, const char *prefix, const struct ovl_msg_schema *s,
			const void *obj)
{
	for (unsigned i = 0; i < s->nfields; i++) {
		const struct ovl_msg_field *fd = &s->fields[i];
		const uint8_t *src = (const uint8_t *)obj + fd->offset;
		char path[256];

		if (!fd->required && field_empty(fd, src))
			continue;
		snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", fd->name);
		dump_field(f, path, fd, src);
	}
}

static void dump_hex(FILE *f, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", p[i]);
}

static void dump_field(FILE *f, const char *path, const struct ovl_msg_field *fd,
		       const void *src)
{
	const uint8_t *p = src;

	switch (fd->type) {
	case OVL_MSG_F_UINT: {
		uint64_t v = 0;

		switch (fd->size) {
		case 1: v = *(const uint8_t *)src; break;
		case 2: v = *(const uint16_t *)src; break;
		case 4: v = *(const uint32_t *)src; break;
		default: v = *(const uint64_t *)src; break;
		}
		fprintf(f, "%s=%llu\n", path, (unsigned long long)v);
		return;
	}
	case OVL_MSG_F_BOOL:
		fprintf(f, "%s=%s\n", path, *(const bool *)src ? "true" : "false");
		return;
	case OVL_MSG_F_STR:
		fprintf(f, "%s=", path);
		for (size_t i = 0; p[i]; i++) {
			if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '\\')
				fprintf(f, "\\x%02x", p[i]);
			else
				fputc(p[i], f);
		}
		fputc('\n', f);
		return;
	case OVL_MSG_F_ENUM:
		fprintf(f, "%s=%s\n", path, fd->names[*(const int *)src] ? fd->names[*(const int *)src]
									    : "?");
		return;
	case OVL_MSG_F_FIXBIN:
		fprintf(f, "%s=", path);
		dump_hex(f, p, fd->size);
		fputc('\n', f);
		return;
	case OVL_MSG_F_BIN:
		fprintf(f, "%s=", path);
		dump_hex(f, ((const struct ovl_msg_bin *)src)->ptr, ((const struct ovl_msg_bin *)src)->len);
		fputc('\n', f);
		return;
	case OVL_MSG_F_STRUCT:
		dump_struct(f, path, fd->sub, src);
		return;
	default: {
		const uint8_t *arr = *(const void *const *)src;
		uint32_t n = *(const uint32_t *)(p - fd->offset + fd->count_offset);

		if (n == 0)
			fprintf(f, "%s=[]\n", path);
		for (uint32_t i = 0; i < n; i++) {
			char ep[256];

			snprintf(ep, sizeof(ep), "%s[%u]", path, i);
			dump_field(f, ep, fd->elem, arr + (size_t)i * fd->elem->size);
		}
		return;
	}
	}
}

void msg_dump(const struct ovl_msg *m, FILE *f)
{
	const struct ovl_msg_schema *s = ovl_msg_schema_find(m->type);

	if (!s) {
		fprintf(f, "t=?\n");
		return;
	}
	fprintf(f, "t=%s\nv=%u.%u\n", s->name, m->ver_major, m->ver_minor);
	if (m->rid)
		fprintf(f, "rid=%llu\n", (unsigned long long)m->rid);
	dump_struct(f, "", s, &m->u);
}
