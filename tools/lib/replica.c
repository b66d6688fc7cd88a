/* libshelf's replicas: the order in which a key's members are tried, the
 * nodes remembered as unreachable, and the tombstone rule (see
 * shelf_int.h and docs/PROTOCOL.md 8.2). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shelf_int.h"

#define UNREACH_FILE_BYTES 8192

/* ---- the order --------------------------------------------------------------- */

static bool in_chassis(const struct ovl_msg_member *mb, const char *site, const char *chassis)
{
	if (!chassis || !chassis[0] || strcmp(mb->domain.chassis, chassis) != 0)
		return false;
	return !site || !site[0] || strcmp(mb->domain.site, site) == 0;
}

/* ovl_place over the members with weights w (0: not a candidate). */
static int place(const struct ovl_msg_map *mp, const uint64_t *w, const void *key, size_t klen,
		 unsigned want, unsigned *out)
{
	struct ovl_place_member *pm = calloc(mp->n_members ? mp->n_members : 1, sizeof(*pm));
	int n;

	if (!pm)
		return -ENOMEM;
	for (uint32_t i = 0; i < mp->n_members; i++) {
		memcpy(pm[i].id, mp->members[i].id, 32);
		pm[i].weight = w[i];
		pm[i].site = mp->members[i].domain.site;
		pm[i].chassis = mp->members[i].domain.chassis;
		pm[i].slot = mp->members[i].domain.slot;
	}
	n = want ? ovl_place(pm, mp->n_members, key, klen, want, out) : 0;
	free(pm);
	return n;
}

void sh_order_release(struct sh_order *o)
{
	free(o->idx);
	free(o->home);
	memset(o, 0, sizeof(*o));
}

int sh_order_build(const struct ovl_msg_map *mp, const void *key, size_t klen, const bool *dead,
		   bool reads, const char *site, const char *chassis, struct sh_order *o)
{
	uint32_t n = mp->n_members;
	unsigned r = mp->replicas < 1 ? 1 : mp->replicas > OVL_PLACE_REPLICAS_MAX
						    ? OVL_PLACE_REPLICAS_MAX : mp->replicas;
	unsigned homes[OVL_PLACE_REPLICAS_MAX], subs[OVL_PLACE_REPLICAS_MAX];
	uint64_t *w = calloc(n ? n : 1, sizeof(*w));
	bool *listed = calloc(n ? n : 1, sizeof(*listed)), *is_home = calloc(n ? n : 1, 1);
	unsigned nlive_members = 0;
	int nh, ns, ret = 0;

	memset(o, 0, sizeof(*o));
	o->idx = calloc(n ? n : 1, sizeof(*o->idx));
	o->home = calloc(n ? n : 1, sizeof(*o->home));
	if (!w || !listed || !is_home || !o->idx || !o->home) {
		ret = -ENOMEM;
		goto out;
	}
	/* the homes: placement over every member that is not out (a down member
	 * keeps its objects, so placement keeps pointing at it) */
	for (uint32_t i = 0; i < n; i++)
		w[i] = mp->members[i].state == OVL_MSG_STATE_OUT ? 0 : mp->members[i].capacity;
	nh = place(mp, w, key, klen, r, homes);
	if (nh < 0) {
		ret = nh;
		goto out;
	}
	if (nh == 0) {
		ret = -EHOSTUNREACH;
		goto out;
	}
	o->nhomes = (unsigned)nh;
	for (int i = 0; i < nh; i++)
		is_home[homes[i]] = true;
	/* 1. live homes: the client's chassis first, then placement order */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < nh; i++) {
			unsigned m = homes[i];
			bool near = reads && in_chassis(&mp->members[m], site, chassis);

			if (dead[m] || listed[m] || (pass == 0 && !near))
				continue;
			o->idx[o->n] = m;
			o->home[o->n++] = true;
			listed[m] = true;
		}
	}
	/* 2. placement over the live members: the substitutes a head picks */
	for (uint32_t i = 0; i < n; i++) {
		if (dead[i])
			w[i] = 0;
		nlive_members += w[i] > 0;
	}
	ns = place(mp, w, key, klen, nlive_members < OVL_PLACE_REPLICAS_MAX ? nlive_members
									   : OVL_PLACE_REPLICAS_MAX,
		   subs);
	if (ns < 0) {
		ret = ns;
		goto out;
	}
	for (int i = 0; i < ns; i++) {
		if (listed[subs[i]])
			continue;
		o->idx[o->n] = subs[i];
		o->home[o->n++] = false;
		listed[subs[i]] = true;
	}
	/* 3. the other live members */
	for (uint32_t i = 0; i < n; i++) {
		if (listed[i] || dead[i] || mp->members[i].state == OVL_MSG_STATE_OUT)
			continue;
		o->idx[o->n] = i;
		o->home[o->n++] = false;
		listed[i] = true;
	}
	o->nlive = o->n;
	/* 4. what is down or was unreachable: homes first */
	for (int i = 0; i < nh; i++) {
		if (listed[homes[i]])
			continue;
		o->idx[o->n] = homes[i];
		o->home[o->n++] = true;
		listed[homes[i]] = true;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (listed[i] || mp->members[i].state == OVL_MSG_STATE_OUT)
			continue;
		o->idx[o->n] = i;
		o->home[o->n++] = is_home[i];
		listed[i] = true;
	}
out:
	free(w);
	free(listed);
	free(is_home);
	if (ret < 0)
		sh_order_release(o);
	return ret;
}

/* ---- tombstones ------------------------------------------------------------- */

void sh_tombs_note(struct sh_tombs *t, const struct ovl_wire_ver *v)
{
	if (!t->any || ovl_wire_ver_cmp(v, &t->newest) > 0)
		t->newest = *v;
	t->any = true;
}

bool sh_tombs_allow(const struct sh_tombs *t, const struct ovl_wire_ver *found)
{
	return !t->any || ovl_wire_ver_cmp(found, &t->newest) > 0;
}

/* ---- nodes remembered as unreachable ---------------------------------------- */

static void unreach_path(const struct shelf *s, char *out, size_t len)
{
	snprintf(out, len, "%s/cache/unreachable", s->dir);
}

/* Drop what expired, and what lies further ahead than the memory lasts (a
 * file from before a reboot: the monotonic clock started again). */
static bool unreach_prune(struct shelf *s, uint64_t now)
{
	unsigned k = 0;
	bool changed = false;

	for (unsigned i = 0; i < s->nunreach; i++) {
		const struct sh_unreach *u = &s->unreach[i];

		if (u->until_ms <= now || u->until_ms > now + (uint64_t)s->unreach_ms) {
			changed = true;
			continue;
		}
		s->unreach[k++] = *u;
	}
	s->nunreach = k;
	return changed;
}

/* Lines "ADDR PORT UNTIL_MS"; anything else is skipped. */
static void unreach_load(struct shelf *s)
{
	char path[700], line[128];
	FILE *f;

	s->unreach_loaded = true;
	if (s->unreach_ms <= 0)
		return;
	unreach_path(s, path, sizeof(path));
	f = fopen(path, "r");
	if (!f)
		return;
	while (s->nunreach < SH_UNREACH_MAX && fgets(line, sizeof(line), f)) {
		char addr[INET6_ADDRSTRLEN + 1];
		unsigned port;
		unsigned long long until;
		struct sh_unreach *u = &s->unreach[s->nunreach];

		if (sscanf(line, "%46s %u %llu", addr, &port, &until) != 3 || port < 1 ||
		    port > 65535 || inet_pton(AF_INET6, addr, &u->addr) != 1)
			continue;
		u->port = (uint16_t)port;
		u->until_ms = until;
		s->nunreach++;
	}
	fclose(f);
	unreach_prune(s, ovl_mono_ms());
}

/* Write the list whole (temporary file, then rename: a reader never sees
 * half of it). No fsync: losing it costs a timeout, nothing more. */
static void unreach_save(const struct shelf *s)
{
	char path[700], tmp[720], buf[UNREACH_FILE_BYTES];
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cache", s->dir);
	mkdir(path, 0700);
	unreach_path(s, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	for (unsigned i = 0; i < s->nunreach; i++) {
		char a[INET6_ADDRSTRLEN];
		int n;

		inet_ntop(AF_INET6, &s->unreach[i].addr, a, sizeof(a));
		n = snprintf(buf + len, sizeof(buf) - len, "%s %u %llu\n", a, s->unreach[i].port,
			     (unsigned long long)s->unreach[i].until_ms);
		if (n < 0 || (size_t)n >= sizeof(buf) - len)
			break;
		len += (size_t)n;
	}
	f = fopen(tmp, "w");
	if (!f)
		return;
	if (fwrite(buf, 1, len, f) != len || fclose(f) != 0 || rename(tmp, path) != 0)
		unlink(tmp);
}

static int unreach_find(const struct shelf *s, const uint8_t addr[16], uint16_t port)
{
	for (unsigned i = 0; i < s->nunreach; i++)
		if (s->unreach[i].port == port && memcmp(&s->unreach[i].addr, addr, 16) == 0)
			return (int)i;
	return -1;
}

bool sh_unreach_is(struct shelf *s, const uint8_t addr[16], uint16_t port)
{
	if (s->unreach_ms <= 0)
		return false;
	if (!s->unreach_loaded)
		unreach_load(s);
	if (unreach_prune(s, ovl_mono_ms()))
		unreach_save(s);
	return unreach_find(s, addr, port) >= 0;
}

void sh_unreach_mark(struct shelf *s, const uint8_t addr[16], uint16_t port)
{
	uint64_t now = ovl_mono_ms();
	int i;

	if (s->unreach_ms <= 0)
		return;
	if (!s->unreach_loaded)
		unreach_load(s);
	unreach_prune(s, now);
	i = unreach_find(s, addr, port);
	if (i < 0) {
		if (s->nunreach == SH_UNREACH_MAX) {
			/* full: the one that expires first goes */
			unsigned old = 0;

			for (unsigned k = 1; k < s->nunreach; k++)
				if (s->unreach[k].until_ms < s->unreach[old].until_ms)
					old = k;
			s->unreach[old] = s->unreach[--s->nunreach];
		}
		i = (int)s->nunreach++;
		memcpy(&s->unreach[i].addr, addr, 16);
		s->unreach[i].port = port;
	}
	s->unreach[i].until_ms = now + (uint64_t)s->unreach_ms;
	unreach_save(s);
}

void sh_unreach_clear(struct shelf *s, const uint8_t addr[16], uint16_t port)
{
	int i;

	if (s->unreach_ms <= 0)
		return;
	if (!s->unreach_loaded)
		unreach_load(s);
	i = unreach_find(s, addr, port);
	if (i < 0)
		return;
	s->unreach[i] = s->unreach[--s->nunreach];
	unreach_save(s);
}
