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

/* One key's placement over a map: the hashes are taken once (most of the
 * cost), then members are picked under each weighting asked. */
struct sh_placing {
	const struct ovl_msg_map *mp;
	struct ovl_place_member *pm;
	double *lnu;
	unsigned *dom;
};

static void placing_free(struct sh_placing *p)
{
	free(p->pm); /* lnu and dom live in the same block */
	p->pm = NULL;
}

/* The hashes of key for every member that is not out. 0 or -ENOMEM. */
static int placing_init(struct sh_placing *p, const struct ovl_msg_map *mp, const void *key,
			size_t klen)
{
	size_t n = mp->n_members ? mp->n_members : 1;
	uint8_t *blk = malloc(n * (sizeof(*p->pm) + sizeof(*p->lnu) + 3 * sizeof(*p->dom)));

	if (!blk)
		return -ENOMEM;
	p->mp = mp;
	p->pm = (struct ovl_place_member *)blk;
	p->lnu = (double *)(blk + n * sizeof(*p->pm));
	p->dom = (unsigned *)(blk + n * (sizeof(*p->pm) + sizeof(*p->lnu)));
	for (uint32_t i = 0; i < mp->n_members; i++) {
		memcpy(p->pm[i].id, mp->members[i].id, 32);
		/* out members hold no data: never hashed, never chosen */
		p->pm[i].weight = mp->members[i].state == OVL_MSG_STATE_OUT ? 0
									 : mp->members[i].capacity;
		p->pm[i].site = mp->members[i].domain.site;
		p->pm[i].chassis = mp->members[i].domain.chassis;
		p->pm[i].slot = mp->members[i].domain.slot;
	}
	ovl_place_hash(p->pm, mp->n_members, key, klen, p->lnu);
	ovl_place_domains(p->pm, mp->n_members, p->dom);
	return 0;
}

/* Placement with weights w (0: not a candidate; w[i] is 0 where the member
 * is out). How many were chosen, or -errno. */
static int place(const struct sh_placing *p, const uint64_t *w, unsigned want, unsigned *out)
{
	return want ? ovl_place_pick(p->pm, p->mp->n_members, w, p->lnu, p->dom, want, out) : 0;
}

/* The homes: placement over every member that is not out (a down member
 * keeps its objects, so placement keeps pointing at it), w the weights
 * (filled here). Their number, -ENOMEM, or -EHOSTUNREACH (none). */
static int homes_place(const struct sh_placing *p, uint64_t *w, unsigned r, unsigned *homes)
{
	int nh;

	for (uint32_t i = 0; i < p->mp->n_members; i++)
		w[i] = p->pm[i].weight;
	nh = place(p, w, r, homes);
	return nh == 0 ? -EHOSTUNREACH : nh;
}

/* A home a read asks first: one in the client's chassis. */
static bool home_near(const struct ovl_msg_map *mp, unsigned m, bool reads, const char *site,
		      const char *chassis)
{
	return reads && in_chassis(&mp->members[m], site, chassis);
}

static unsigned replicas_of(const struct ovl_msg_map *mp)
{
	return mp->replicas < 1 ? 1 : mp->replicas > OVL_PLACE_REPLICAS_MAX
					      ? OVL_PLACE_REPLICAS_MAX : mp->replicas;
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
	unsigned r = replicas_of(mp);
	unsigned homes[OVL_PLACE_REPLICAS_MAX], subs[OVL_PLACE_REPLICAS_MAX];
	uint64_t *w = calloc(n ? n : 1, sizeof(*w));
	bool *listed = calloc(n ? n : 1, sizeof(*listed)), *is_home = calloc(n ? n : 1, 1);
	unsigned nlive_members = 0;
	struct sh_placing p = { 0 };
	int nh, ns, ret = 0;

	memset(o, 0, sizeof(*o));
	o->idx = calloc(n ? n : 1, sizeof(*o->idx));
	o->home = calloc(n ? n : 1, sizeof(*o->home));
	if (!w || !listed || !is_home || !o->idx || !o->home || placing_init(&p, mp, key, klen) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	nh = homes_place(&p, w, r, homes);
	if (nh < 0) {
		ret = nh;
		goto out;
	}
	o->nhomes = (unsigned)nh;
	for (int i = 0; i < nh; i++)
		is_home[homes[i]] = true;
	/* 1. live homes: the client's chassis first, then placement order */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < nh; i++) {
			unsigned m = homes[i];

			if (dead[m] || listed[m] || (pass == 0 && !home_near(mp, m, reads, site, chassis)))
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
	ns = place(&p, w, nlive_members < OVL_PLACE_REPLICAS_MAX ? nlive_members
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
	placing_free(&p);
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

/* ---- one read across the replicas: the shared rules ---------------------------
 * (the blocking read path in shelf.c and the asynchronous one in aio.c) */

void sh_key_show(const void *key, size_t klen, char out[SH_KSHOW_BYTES])
{
	snprintf(out, SH_KSHOW_BYTES, "%.*s%s", (int)(klen < 64 ? klen : 64), (const char *)key,
		 klen > 64 ? "..." : "");
}

int sh_key_check(const char *what, const char *slice, const char *kshow, size_t klen, char *err,
		 size_t errlen)
{
	if (!slice || !*slice)
		return sh_fail(err, errlen, -EINVAL, "%s '%s': no slice named", what, kshow);
	if (klen == 0 || klen > OVL_WIRE_KEY_MAX_BYTES)
		return sh_fail(err, errlen, -EINVAL,
			       "%s '%s': a key is 1 to %u bytes long, and this one is %zu bytes",
			       what, kshow, OVL_WIRE_KEY_MAX_BYTES, klen);
	return 0;
}

void sh_status_text(char *out, size_t len, const char *node, const struct ovl_wire_resp *r)
{
	snprintf(out, len, "node %s: %s%s%s", node,
		 ovl_wire_status_name(r->status) ? ovl_wire_status_name(r->status) : "error",
		 r->message[0] ? ": " : "", r->message);
}

void sh_rd_note(struct sh_rd_fail *f, int rank, int code, const char *text)
{
	if (rank <= f->rank)
		return;
	f->rank = rank;
	f->code = code;
	snprintf(f->text, sizeof(f->text), "%s", text);
}

bool *sh_dead_members(struct shelf *s, const struct ovl_msg_map *mp)
{
	bool *dead = calloc(mp->n_members ? mp->n_members : 1, sizeof(*dead));

	for (uint32_t i = 0; dead && i < mp->n_members; i++)
		dead[i] = mp->members[i].state == OVL_MSG_STATE_DOWN ||
			  sh_unreach_is(s, mp->members[i].addr, mp->members[i].port);
	return dead;
}

/* An address as text. An operation lists every member of the slice as a
 * candidate, so the same few addresses are formatted over and over: a
 * small memo per thread (direct-mapped by the address's last bytes) keeps
 * inet_ntop() out of every operation. */
static void addr_text(const uint8_t addr[16], char text[INET6_ADDRSTRLEN])
{
	static __thread struct {
		bool set;
		uint8_t addr[16];
		char text[INET6_ADDRSTRLEN];
	} memo[64];
	unsigned h = ((unsigned)addr[15] ^ (unsigned)addr[14] * 31u ^ (unsigned)addr[13] * 17u) % 64u;

	if (!memo[h].set || memcmp(memo[h].addr, addr, 16) != 0) {
		inet_ntop(AF_INET6, addr, memo[h].text, sizeof(memo[h].text));
		memcpy(memo[h].addr, addr, 16);
		memo[h].set = true;
	}
	memcpy(text, memo[h].text, INET6_ADDRSTRLEN);
}

void sh_cand_set(struct sh_cand *c, const struct ovl_msg_member *mb, bool home)
{
	memcpy(c->id, mb->id, sizeof(c->id));
	memcpy(c->addr, mb->addr, sizeof(c->addr));
	c->port = mb->port;
	c->home = home;
	addr_text(mb->addr, c->text);
}

void sh_node_lost(struct shelf *s, const struct sh_cand *c)
{
	s->counters.unreachable++;
	sh_unreach_mark(s, c->addr, c->port);
}

void sh_node_damaged(struct shelf *s, const char *what, const char *kshow, const struct sh_cand *c,
		     const char *text)
{
	char w[1024], id[17];

	s->counters.checksum_errors++;
	if (!s->warn)
		return;
	for (int i = 0; i < 8; i++)
		snprintf(id + 2 * i, 3, "%02x", c->id[i]);
	snprintf(w, sizeof(w), "%s '%s': replica damaged, reading another one: %s (id %s)", what,
		 kshow, text, id);
	s->warn(s->warn_arg, w);
}

struct ovl_wire_ver sh_resp_ver(const struct ovl_wire_resp *r)
{
	struct ovl_wire_ver v = { 0, 0 };

	return r->has_ver ? r->ver : v;
}

void sh_rd_pass_begin(struct sh_rd_pass *p, bool first)
{
	/* the code of a pass in which nothing was noted is the last pass's */
	int code = first ? -EHOSTUNREACH : p->fail.code;

	memset(p, 0, sizeof(*p));
	p->fail.rank = SH_RK_NONE;
	p->fail.code = code;
}

bool sh_rd_pass_done(struct sh_rd_pass *p, bool home, unsigned nhomes)
{
	/* the homes all answered that they do not have it: nobody else should
	 * (a substitute hands its copy over before its home serves reads), but
	 * for a rebalance under way: members that joined become homes before
	 * the copies reach them, and the homes they displaced follow them in
	 * placement order. So a plain not-found from every home (no tombstone)
	 * asks the next R + 2 members in placement order too. */
	if (!home && p->homes_final == nhomes &&
	    (p->tombs.any || p->beyond >= nhomes + SH_REBALANCE_EXTRA))
		return true;
	if (!home && p->homes_final == nhomes)
		p->beyond++;
	return false;
}

void sh_rd_lost(struct shelf *s, struct sh_rd_pass *p, const char *what, const char *kshow,
		const struct sh_cand *c, int ret, const char *text)
{
	if (ret == -EHOSTUNREACH) {
		sh_node_lost(s, c);
		sh_rd_note(&p->fail, c->home ? SH_RK_UNREACHABLE : SH_RK_OTHER, ret, text);
		return;
	}
	/* a bad answer (the connection is closed): another replica */
	if (ret == -EIO)
		sh_node_damaged(s, what, kshow, c, text);
	sh_rd_note(&p->fail, ret == -EIO ? SH_RK_DAMAGED : SH_RK_OTHER, ret, text);
}

enum sh_rd_verdict sh_rd_answer(struct shelf *s, struct sh_rd_pass *p, const char *what,
				const char *kshow, const struct sh_cand *c, unsigned pos,
				uint8_t type, const struct ovl_wire_resp *r, const uint8_t *body,
				size_t blen, bool stale_ok)
{
	char e2[768];

	sh_unreach_clear(s, c->addr, c->port);
	sh_status_text(e2, sizeof(e2), c->text, r);
	if (r->status == OVL_WIRE_OK && type == OVL_WIRE_T_GET && r->has_crc &&
	    ovl_crc32c(0, body, blen) != r->crc) {
		snprintf(e2, sizeof(e2), "node %s: payload checksum mismatch in transit", c->text);
		sh_node_damaged(s, what, kshow, c, e2);
		sh_rd_note(&p->fail, SH_RK_DAMAGED, -EIO, e2);
	} else if (r->status == OVL_WIRE_OK) {
		return SH_RD_OBJECT;
	} else if (r->status == OVL_WIRE_NOT_FOUND) {
		if (r->tomb && r->has_ver) {
			sh_tombs_note(&p->tombs, &r->ver);
			sh_rd_note(&p->fail, SH_RK_DELETED, -ENOENT, e2);
		} else if (c->home) {
			sh_rd_note(&p->fail, SH_RK_NOT_FOUND, -ENOENT, e2);
		}
		if (!r->tomb && p->nnf < OVL_PLACE_REPLICAS_MAX)
			p->nf[p->nnf++] = pos;
		p->homes_final += c->home;
	} else if (r->status == OVL_WIRE_CHECKSUM_MISMATCH) {
		sh_node_damaged(s, what, kshow, c, e2);
		sh_rd_note(&p->fail, SH_RK_DAMAGED, -EIO, e2);
	} else if (r->status == OVL_WIRE_BUSY) {
		s->counters.busy++;
		p->saw_busy = true;
		sh_rd_note(&p->fail, SH_RK_BUSY, -EBUSY, e2);
	} else if (r->status == OVL_WIRE_STALE_MAP && stale_ok) {
		/* this node has a newer map: ask it first when the broker cannot
		 * answer, and start again */
		memcpy(&s->hint.addr, c->addr, 16);
		s->hint.port = c->port;
		s->has_hint = true;
		return SH_RD_STALE;
	} else {
		sh_rd_note(&p->fail, SH_RK_OTHER, ovl_wire_status_to_errno(r->status), e2);
	}
	return SH_RD_NEXT;
}

bool sh_rd_accept(struct shelf *s, struct sh_rd_pass *p, bool home, const struct ovl_wire_resp *r)
{
	struct ovl_wire_ver v = sh_resp_ver(r);

	if (sh_tombs_allow(&p->tombs, &v))
		return true;
	/* an older copy than a delete seen on another replica */
	s->counters.stale_skipped++;
	p->homes_final += home;
	return false;
}

void sh_tombs_probe_answer(struct sh_rd_pass *p, const struct ovl_wire_resp *r)
{
	if (r->status == OVL_WIRE_NOT_FOUND && r->tomb && r->has_ver)
		sh_tombs_note(&p->tombs, &r->ver);
}

int sh_rd_fail_end(struct sh_rd_pass *p, const char *what, const char *kshow, char *err,
		   size_t errlen)
{
	if (p->fail.rank == SH_RK_NONE)
		snprintf(p->fail.text, sizeof(p->fail.text), "no node answered");
	return sh_fail(err, errlen, p->fail.code, "%s '%s': %s", what, kshow, p->fail.text);
}

int sh_busy_pause_ms(unsigned retries)
{
	return 100 << retries;
}
