/*
 * node_update: the node's update agent. See update.h.
 */
#include "update.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "../boot/bootstate.h"
#include "../req/req_bg.h"
#include "ovl_fleet.h"
#include "update_int.h"

#define UPDATE_PATH_BYTES 640
#define UPDATE_EVENTS 16
#define UPDATE_EVENT_BYTES 400
#define UPDATE_STATE_MAX_BYTES 2048
#define UPDATE_BOOT_CHECK_MS 1000
#define UPDATE_BLOCKS_MAGIC "SHUPBLK1" /* image.blocks: magic, release id, bitmap */
#define UPDATE_BLOCKS_HEAD_BYTES (8 + 32)
#define UPDATE_HASH_READ_BYTES (1u << 20)

enum phase { PH_NONE, PH_FETCH, PH_HASH, PH_EXTRACT };

/* One block being fetched, a piece at a time. */
struct fslot {
	bool busy, call_out;
	uint32_t i;                     /* the block */
	uint64_t off;                   /* its bytes received and hashed */
	unsigned cand;                  /* position in the placement order fetched from */
	uint64_t gen;                   /* answers of an older generation are dropped */
	crypto_hash_sha256_state h;
};

struct ucall {
	struct node_update *u;
	unsigned si;
	uint64_t gen, off, len;
	uint8_t from[OVL_ID_BYTES];     /* the home asked */
	uint64_t t0;                    /* when (ovl_mono_ms) */
};

/* The homes measured (the members of a large slice: the least recently
 * measured makes room) */
#define UPDATE_HOMES_MAX 64

struct node_update {
	struct node_update_opts o;
	char dir[UPDATE_PATH_BYTES / 2], board[OVL_FLEET_BOARD_BYTES];
	char running[OVL_FLEET_VERSION_BYTES];
	uint8_t id[OVL_ID_BYTES];
	struct node_repl *repl;
	unsigned refs;
	bool dying;
	bool kick; /* a piece arrived: ask the next at once (node_update_poll()) */
	/* persisted in update/state */
	uint64_t seq;
	uint8_t state;
	char target[OVL_FLEET_VERSION_BYTES];
	char reason[OVL_FLEET_REASON_BYTES];
	uint64_t total;
	uint8_t bkey[OVL_ID_BYTES];         /* the broker key the assignment verified with */
	bool have_bkey;
	/* the release worked on */
	bool have_rel;
	struct ovl_fleet_release rel;
	char slice[OVL_FLEET_SLICE_BYTES];
	uint64_t arate;
	enum phase phase;
	bool resume;
	int part_fd, blk_fd;
	uint8_t *bitmap;
	size_t bm_len;
	struct update_blk *blks;
	struct fslot slots[NODE_UPDATE_INFLIGHT_MAX];
	struct update_home homes[UPDATE_HOMES_MAX]; /* how fast each home served */
	unsigned nhomes;
	uint32_t nmarked;
	uint64_t done_bytes;
	struct req_bucket bucket;
	/* the whole payload's hash */
	uint64_t hash_off;
	crypto_hash_sha256_state hh;
	/* extraction */
	pid_t tar_pid;
	uint64_t tar_start_ms;
	/* restart */
	bool exit_wanted, rep_sent;
	uint64_t restart_ms;
	/* the boot state's other slot */
	char other[OVL_FLEET_VERSION_BYTES];
	bool other_good;
	uint64_t boot_check_ms, inject_ms;
	uint8_t last_env[32];               /* hash of the last envelope handled */
	char last_err[320];                 /* why a home did not answer last */
	uint64_t nomap_ms;                  /* since when the slice's map is missing (0: it is not) */
	/* counters */
	uint64_t bytes_fetched, blocks_bad, blocks_verified;
	/* events */
	struct {
		int level;
		char text[UPDATE_EVENT_BYTES];
	} ev[UPDATE_EVENTS];
	unsigned ev_head, ev_n;
};

static void event(struct node_update *u, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void event(struct node_update *u, int level, const char *fmt, ...)
{
	unsigned k;
	va_list ap;

	if (u->ev_n == UPDATE_EVENTS) { /* the oldest goes */
		u->ev_head = (u->ev_head + 1) % UPDATE_EVENTS;
		u->ev_n--;
	}
	k = (u->ev_head + u->ev_n++) % UPDATE_EVENTS;
	u->ev[k].level = level;
	va_start(ap, fmt);
	vsnprintf(u->ev[k].text, sizeof(u->ev[k].text), fmt, ap);
	va_end(ap);
}

bool node_update_event_next(struct node_update *u, int *level, char *text, size_t len)
{
	if (!u || !u->ev_n)
		return false;
	*level = u->ev[u->ev_head].level;
	snprintf(text, len, "%s", u->ev[u->ev_head].text);
	u->ev_head = (u->ev_head + 1) % UPDATE_EVENTS;
	u->ev_n--;
	return true;
}

static void path(const struct node_update *u, char *out, size_t len, const char *name)
{
	if (snprintf(out, len, "%s/%s", u->dir, name) >= (int)len)
		out[0] = 0;
}

static void slot_path(const struct node_update *u, char *out, size_t len, char slot,
		      const char *suffix)
{
	if (snprintf(out, len, "%s/slots/%c%s", u->dir, slot, suffix) >= (int)len)
		out[0] = 0;
}

static char other_slot(const struct node_update *u)
{
	return u->o.slot == 'a' ? 'b' : 'a';
}

static uint64_t now_s(struct node_update *u)
{
	return u->o.now_s ? u->o.now_s(u->o.arg) : 0;
}

/* ---- files -------------------------------------------------------------- */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

/* Remove a tree (nothing when it is missing). 0 or -errno. */
static int rm_tree(const char *p)
{
	struct stat st;

	if (lstat(p, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	return nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS) < 0 ? -(errno ? errno : EIO) : 0;
}

static int sync_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	int fd;

	(void)ftw;
	if (flag != FTW_F && flag != FTW_D && flag != FTW_DP)
		return 0;
	if (!S_ISREG(sb->st_mode) && !S_ISDIR(sb->st_mode))
		return 0;
	fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* fsync every file and directory of a tree. 0 or -errno. */
static int sync_tree(const char *p)
{
	return nftw(p, sync_cb, 16, FTW_PHYS | FTW_DEPTH) < 0 ? -(errno ? errno : EIO) : 0;
}

static int read_file(const char *p, uint8_t **out, size_t *len, size_t max)
{
	struct stat st;
	uint8_t *b = NULL;
	int fd = open(p, O_RDONLY | O_CLOEXEC), rc = 0;
	ssize_t n;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		rc = -E2BIG;
		goto out;
	}
	b = malloc((size_t)st.st_size + 1);
	if (!b) {
		rc = -ENOMEM;
		goto out;
	}
	n = pread(fd, b, (size_t)st.st_size, 0);
	if (n != st.st_size) {
		rc = n < 0 ? -errno : -EIO;
		goto out;
	}
	b[st.st_size] = 0;
	*out = b;
	*len = (size_t)st.st_size;
	b = NULL;
out:
	free(b);
	close(fd);
	return rc;
}

/* One-line text: control bytes become spaces. */
static void clean_text(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = ' ';
}

static void state_save(struct node_update *u)
{
	char p[UPDATE_PATH_BYTES], text[UPDATE_STATE_MAX_BYTES], bk[65] = "-", err[256];
	int n;

	if (u->have_bkey)
		ovl_hex_encode(u->bkey, OVL_ID_BYTES, bk);
	clean_text(u->reason);
	n = snprintf(text, sizeof(text),
		     "seq %" PRIu64 "\nstate %s\ntarget %s\ntotal %" PRIu64 "\nbroker %s\nreason %s\n",
		     u->seq, ovl_fleet_state_name(u->state), u->target[0] ? u->target : "-", u->total,
		     bk, u->reason);
	path(u, p, sizeof(p), "update/state");
	if (n < 0 || (size_t)n >= sizeof(text) ||
	    ovl_file_write_atomic(p, text, (size_t)n, 0600, err, sizeof(err)) < 0)
		event(u, NODE_UPDATE_EV_ERROR, "update: cannot save '%s': %s", p,
		      n < 0 || (size_t)n >= sizeof(text) ? "too long" : err);
}

/* Load update/state; a missing file is a first start (idle). */
static void state_load(struct node_update *u, bool *found)
{
	char p[UPDATE_PATH_BYTES];
	uint8_t *buf = NULL;
	size_t len = 0;
	char *save = NULL;

	*found = false;
	path(u, p, sizeof(p), "update/state");
	if (read_file(p, &buf, &len, UPDATE_STATE_MAX_BYTES) < 0)
		return;
	for (char *l = strtok_r((char *)buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *v = strchr(l, ' ');

		if (!v)
			continue;
		*v++ = 0;
		if (strcmp(l, "seq") == 0) {
			u->seq = strtoull(v, NULL, 10);
		} else if (strcmp(l, "state") == 0) {
			for (uint8_t s = 0; s < OVL_FLEET_STATES; s++)
				if (strcmp(ovl_fleet_state_name(s), v) == 0) {
					u->state = s;
					*found = true;
				}
		} else if (strcmp(l, "target") == 0) {
			uint64_t x;

			if (ovl_fleet_version_parse(v, &x) == 0)
				snprintf(u->target, sizeof(u->target), "%s", v);
		} else if (strcmp(l, "total") == 0) {
			u->total = strtoull(v, NULL, 10);
		} else if (strcmp(l, "broker") == 0) {
			u->have_bkey = strlen(v) == 64 && ovl_hex_decode(v, u->bkey, OVL_ID_BYTES) == 0;
		} else if (strcmp(l, "reason") == 0) {
			snprintf(u->reason, sizeof(u->reason), "%s", v);
		}
	}
	free(buf);
}

/* ---- the boot state ------------------------------------------------------ */

/* Refresh what the report says of the other slot; *good_running: the
 * running slot is marked good. */
static int boot_view(struct node_update *u, struct boot_state *st, bool *good_running)
{
	char err[256];
	int rc, oi;

	*good_running = false;
	if (!u->o.slot)
		return -ENOENT;
	rc = boot_state_load(u->dir, st, err, sizeof(err));
	if (rc < 0)
		return rc;
	oi = boot_slot_index(other_slot(u));
	u->other[0] = 0;
	u->other_good = false;
	if (st->s[oi].present) {
		snprintf(u->other, sizeof(u->other), "%s", st->s[oi].version);
		u->other_good = st->s[oi].good;
	}
	*good_running = st->s[boot_slot_index(u->o.slot)].good;
	return 0;
}

/* ---- the fetch ------------------------------------------------------------- */

static void fetch_close(struct node_update *u)
{
	for (unsigned i = 0; i < NODE_UPDATE_INFLIGHT_MAX; i++) {
		u->slots[i].busy = false;
		u->slots[i].call_out = false;
		u->slots[i].gen++;
	}
	if (u->part_fd >= 0)
		close(u->part_fd);
	if (u->blk_fd >= 0)
		close(u->blk_fd);
	u->part_fd = u->blk_fd = -1;
	free(u->bitmap);
	free(u->blks);
	u->bitmap = NULL;
	u->blks = NULL;
	u->bm_len = 0;
	if (u->tar_pid > 0) {
		kill(u->tar_pid, SIGKILL);
		waitpid(u->tar_pid, NULL, 0);
	}
	u->tar_pid = 0;
	u->phase = PH_NONE;
}

static void release_drop(struct node_update *u)
{
	fetch_close(u);
	if (u->have_rel)
		ovl_fleet_release_free(&u->rel);
	u->have_rel = false;
}

/* Stop and say why: state failed, the reason logged at warning. */
static void fail(struct node_update *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct node_update *u, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(u->reason, sizeof(u->reason), fmt, ap);
	va_end(ap);
	clean_text(u->reason);
	release_drop(u);
	u->state = OVL_FLEET_STATE_FAILED;
	u->resume = false;
	event(u, NODE_UPDATE_EV_WARN, "update: failed: %s", u->reason);
	state_save(u);
}

static bool marked(const struct node_update *u, uint32_t i)
{
	return u->bitmap[i / 8] & (1u << (i % 8));
}

/* Open update/image.part and update/image.blocks for u->rel; keep the
 * blocks marked when the bitmap is this release's. 0 or -errno (err). */
static int fetch_open(struct node_update *u, char *err, size_t errlen)
{
	char pp[UPDATE_PATH_BYTES], bp[UPDATE_PATH_BYTES];
	uint8_t head[UPDATE_BLOCKS_HEAD_BYTES];
	struct stat st;
	size_t want;
	bool keep = false;
	int rc = 0;

	path(u, pp, sizeof(pp), "update/image.part");
	path(u, bp, sizeof(bp), "update/image.blocks");
	u->bm_len = (u->rel.nblocks + 7) / 8;
	want = UPDATE_BLOCKS_HEAD_BYTES + u->bm_len;
	u->bitmap = calloc(1, u->bm_len);
	u->blks = calloc(u->rel.nblocks, sizeof(*u->blks));
	if (!u->bitmap || !u->blks) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	u->part_fd = open(pp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	u->blk_fd = open(bp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (u->part_fd < 0 || u->blk_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open '%s': %s", u->part_fd < 0 ? pp : bp, strerror(errno));
		return rc;
	}
	if (fstat(u->blk_fd, &st) == 0 && (size_t)st.st_size == want &&
	    pread(u->blk_fd, head, sizeof(head), 0) == (ssize_t)sizeof(head) &&
	    memcmp(head, UPDATE_BLOCKS_MAGIC, 8) == 0 && memcmp(head + 8, u->rel.id, 32) == 0 &&
	    pread(u->blk_fd, u->bitmap, u->bm_len, sizeof(head)) == (ssize_t)u->bm_len &&
	    fstat(u->part_fd, &st) == 0 && (uint64_t)st.st_size == u->rel.size)
		keep = true;
	if (!keep) {
		/* another release's, or none: start over */
		memset(u->bitmap, 0, u->bm_len);
		memcpy(head, UPDATE_BLOCKS_MAGIC, 8);
		memcpy(head + 8, u->rel.id, 32);
		if (ftruncate(u->part_fd, 0) < 0 || ftruncate(u->part_fd, (off_t)u->rel.size) < 0 ||
		    ftruncate(u->blk_fd, 0) < 0 || pwrite(u->blk_fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
		    pwrite(u->blk_fd, u->bitmap, u->bm_len, sizeof(head)) != (ssize_t)u->bm_len ||
		    fsync(u->part_fd) < 0 || fsync(u->blk_fd) < 0 || ovl_file_sync_parent(bp) < 0) {
			rc = -errno;
			snprintf(err, errlen, "cannot prepare '%s': %s", pp, strerror(errno));
			return rc ? rc : -EIO;
		}
	}
	u->nmarked = 0;
	u->done_bytes = 0;
	for (uint32_t i = 0; i < u->rel.nblocks; i++)
		if (marked(u, i)) {
			u->nmarked++;
			u->done_bytes += ovl_fleet_block_len(&u->rel, i);
		}
	return 0;
}

static uint64_t fetch_rate(const struct node_update *u)
{
	uint64_t a = u->arate, b = u->o.rate;

	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

static void hash_begin(struct node_update *u)
{
	u->phase = PH_HASH;
	u->hash_off = 0;
	crypto_hash_sha256_init(&u->hh);
}

/* Start (or resume) fetching u->rel. */
static void fetch_begin(struct node_update *u)
{
	char err[300];

	fetch_close(u);
	if (fetch_open(u, err, sizeof(err)) < 0) {
		fail(u, "release %s: %s", u->rel.version, err);
		return;
	}
	req_bucket_init(&u->bucket, fetch_rate(u), ovl_mono_ms());
	u->state = OVL_FLEET_STATE_FETCHING;
	snprintf(u->target, sizeof(u->target), "%s", u->rel.version);
	u->total = u->rel.size;
	u->reason[0] = 0;
	u->phase = PH_FETCH;
	state_save(u);
	event(u, NODE_UPDATE_EV_INFO,
	      "update: fetching release %s (%" PRIu64 " bytes, %u blocks of %u) from slice '%s'%s",
	      u->rel.version, u->rel.size, u->rel.nblocks, u->rel.block_size, u->slice,
	      u->nmarked ? "; resuming" : "");
	if (u->nmarked)
		event(u, NODE_UPDATE_EV_INFO, "update: %u of %u blocks already verified (%" PRIu64 " bytes)",
		      u->nmarked, u->rel.nblocks, u->done_bytes);
	if (u->nmarked == u->rel.nblocks)
		hash_begin(u);
}

/* ---- how fast each home serves ---- */

void update_home_note(struct update_home *h, bool ok, uint64_t bytes, uint64_t ms,
		      uint64_t now_ms)
{
	bool known = h->rate > 0 && now_ms - h->last_ms <= UPDATE_HOME_TTL_MS;

	if (ok) {
		double sample = (double)bytes / (double)(ms ? ms : 1);

		h->rate = known ? (h->rate + sample) / 2 : sample;
	} else {
		/* a failure: much slower than thought (and, never measured,
		 * slower than any home that answers) */
		h->rate = known ? h->rate / 4 : 1e-3;
	}
	if (h->rate < 1e-3)
		h->rate = 1e-3;
	h->last_ms = now_ms;
}

/* A home's measured speed, or 0 (never measured, or long ago). */
static double home_rate(const struct update_home *h, uint64_t now_ms)
{
	return h && h->rate > 0 && now_ms - h->last_ms <= UPDATE_HOME_TTL_MS ? h->rate : 0;
}

int update_home_pick(struct update_home *const *h, const bool *eligible, int n, int cur,
		     uint64_t now_ms)
{
	int best = -1;
	double best_score = -1;

	if (cur >= 0 && cur < n && eligible[cur]) {
		double rc = home_rate(h[cur], now_ms);
		int fast = -1;
		double fr = 0;

		for (int p = 0; p < n && rc > 0; p++) {
			double r = home_rate(h[p], now_ms);

			if (p != cur && eligible[p] && r > fr) {
				fr = r;
				fast = p;
			}
		}
		return fast >= 0 && fr > UPDATE_HOME_SWITCH * rc ? fast : cur;
	}
	for (int p = 0; p < n; p++) {
		double r, score;
		unsigned inflight;

		if (!eligible[p])
			continue;
		r = home_rate(h[p], now_ms);
		inflight = h[p] ? h[p]->inflight : 0;
		if (r > 0)
			score = r / (1.0 + inflight);
		else
			score = inflight ? 0 : 1e300;
		if (score > best_score) {
			best_score = score;
			best = p;
		}
	}
	return best;
}

/* The entry of home `id`, or NULL (never measured, or forgotten). */
static struct update_home *home_find(struct node_update *u, const uint8_t *id)
{
	for (unsigned i = 0; i < u->nhomes; i++)
		if (memcmp(u->homes[i].id, id, OVL_ID_BYTES) == 0)
			return &u->homes[i];
	return NULL;
}

/* The entry of home `id` (made when it is new, in the place of the least
 * recently measured when the table is full; NULL when every entry has
 * pieces out). */
static struct update_home *home_of(struct node_update *u, const uint8_t *id)
{
	struct update_home *h = home_find(u, id);

	if (h)
		return h;
	if (u->nhomes < UPDATE_HOMES_MAX) {
		h = &u->homes[u->nhomes++];
	} else {
		for (unsigned i = 0; i < UPDATE_HOMES_MAX; i++)
			if (!u->homes[i].inflight && (!h || u->homes[i].last_ms < h->last_ms))
				h = &u->homes[i];
		if (!h)
			return NULL; /* every one has pieces out: not measured */
	}
	memset(h, 0, sizeof(*h));
	memcpy(h->id, id, OVL_ID_BYTES);
	return h;
}

/* The placement order of the block key over the map's members not out:
 * its first R are the homes. How many homes (<= 32), or -errno. */
static int homes(const struct node_ctl_map *m, const uint8_t *key, size_t klen, unsigned *order)
{
	return node_repl_place_order(m, key, klen, m->replicas ? m->replicas : 1, order);
}

static bool member_live(struct node_update *u, const struct node_ctl_map *m, unsigned i)
{
	if (memcmp(m->members[i].id, u->id, OVL_ID_BYTES) == 0)
		return true;
	return m->members[i].state == OVL_MSG_STATE_UP && !node_repl_unreachable(u->repl, m, i);
}

static void ucall_free(struct ucall *uc);
static void piece_done(void *arg, struct ovl_dpc_call *call);

static void slot_free(struct node_update *u, unsigned si)
{
	struct fslot *s = &u->slots[si];

	if (s->busy && u->blks)
		u->blks[s->i].busy = false;
	s->busy = false;
	s->call_out = false;
	s->gen++;
}

/*
 * The block of slot si goes to its next home (from its first byte):
 * `bad` when the one it came from served bytes that do not verify.
 * When the round's homes are all used up: a new round after a backoff,
 * or the fetch fails.
 */
static void block_next_home(struct node_update *u, unsigned si, bool bad)
{
	struct fslot *s = &u->slots[si];
	struct update_blk *b = &u->blks[s->i];

	if (bad)
		b->bad |= 1u << s->cand;
	else
		b->tried |= 1u << s->cand;
	s->off = 0;
	crypto_hash_sha256_init(&s->h);
	slot_free(u, si);
	b->next_ms = 0;
}

/* Choose the home position to fetch block i's next piece from, among
 * those not bad, not tried this round and live (update_home_pick(): the
 * fastest; a block begun stays where its bytes came from, cur, unless a
 * much faster home is there); -1 when none. *nh: the homes. */
static int pick_home(struct node_update *u, const struct node_ctl_map *m, uint32_t i, int cur,
		     unsigned *order, int *nh)
{
	uint8_t key[OVL_FLEET_BLOCK_KEY_BYTES];
	struct update_blk *b = &u->blks[i];
	struct update_home *h[OVL_PLACE_REPLICAS_MAX];
	bool ok[OVL_PLACE_REPLICAS_MAX];
	int n;

	ovl_fleet_block_key(key, u->rel.id, i);
	*nh = homes(m, key, sizeof(key), order);
	n = *nh < OVL_PLACE_REPLICAS_MAX ? *nh : OVL_PLACE_REPLICAS_MAX;
	for (int p = 0; p < n; p++) {
		ok[p] = !(b->bad & (1u << p)) && !(b->tried & (1u << p)) &&
			member_live(u, m, order[p]);
		h[p] = ok[p] ? home_find(u, m->members[order[p]].id) : NULL;
	}
	return n > 0 ? update_home_pick(h, ok, n, cur, ovl_mono_ms()) : -1;
}

/* Ask for slot si's next piece, when the bucket gives it. */
static void slot_ask(struct node_update *u, unsigned si, uint64_t now)
{
	struct fslot *s = &u->slots[si];
	const struct node_ctl_map *m = node_repl_map(u->repl, u->slice);
	unsigned order[OVL_PLACE_REPLICAS_MAX];
	uint64_t len = ovl_fleet_block_len(&u->rel, s->i) - s->off, got;
	struct ovl_wire_req *q = NULL;
	struct ucall *uc = NULL;
	char err[NODE_REPL_ERR_BYTES];
	int nh = 0, p;

	if (!m) {
		/* a map that has not come yet (a node just started) */
		if (!u->nomap_ms)
			u->nomap_ms = now;
		else if (now >= u->nomap_ms + UPDATE_NOMAP_MS)
			fail(u, "release %s: this node holds no map of slice '%s'", u->rel.version,
			     u->slice);
		return;
	}
	u->nomap_ms = 0;
	p = pick_home(u, m, s->i, s->off ? (int)s->cand : -1, order, &nh);
	if (p < 0 || (s->off && (unsigned)p != s->cand)) {
		/* its home is gone mid-block: the block starts over elsewhere */
		if (p >= 0) {
			s->off = 0;
			crypto_hash_sha256_init(&s->h);
		} else {
			struct update_blk *b = &u->blks[s->i];
			uint32_t all = nh >= 32 ? UINT32_MAX : (1u << nh) - 1;
			uint32_t i = s->i;

			slot_free(u, si);
			if (nh > 0 && (b->bad & all) == all) {
				fail(u, "block %u of release %s does not verify from any of its %d home(s)",
				     i, u->rel.version, nh);
				return;
			}
			if (++b->rounds >= UPDATE_ROUNDS_MAX) {
				fail(u, "block %u of release %s: no home of slice '%s' served it in %u rounds (last: %s)",
				     i, u->rel.version, u->slice, b->rounds,
				     u->last_err[0] ? u->last_err : "no live home");
				return;
			}
			b->tried = 0;
			b->next_ms = now + (UPDATE_BACKOFF_MIN_MS << (b->rounds - 1) > UPDATE_BACKOFF_MAX_MS
						    ? UPDATE_BACKOFF_MAX_MS
						    : UPDATE_BACKOFF_MIN_MS << (b->rounds - 1));
			return;
		}
	}
	s->cand = (unsigned)p;
	if (len > REQ_BG_PIECE_MAX_BYTES)
		len = REQ_BG_PIECE_MAX_BYTES;
	got = req_bucket_take(&u->bucket, len, now);
	if (!got)
		return; /* the next tick */
	q = calloc(1, sizeof(*q));
	uc = calloc(1, sizeof(*uc));
	if (!q || !uc) {
		free(q);
		free(uc);
		return;
	}
	q->type = OVL_WIRE_T_GET;
	ovl_fleet_block_key(q->key, u->rel.id, s->i);
	q->key_len = OVL_FLEET_BLOCK_KEY_BYTES;
	q->has_range = true;
	q->offset = s->off;
	q->length = got;
	uc->u = u;
	uc->si = si;
	uc->gen = s->gen;
	uc->off = s->off;
	uc->len = got;
	memcpy(uc->from, m->members[order[p]].id, OVL_ID_BYTES);
	uc->t0 = ovl_mono_ms();
	if (node_repl_call(u->repl, m, order[p], q, piece_done, uc, NULL, err, sizeof(err)) < 0) {
		free(uc);
		free(q);
		snprintf(u->last_err, sizeof(u->last_err), "%s", err);
		block_next_home(u, si, false);
		return;
	}
	free(q);
	u->refs++;
	s->call_out = true;
	{
		struct update_home *h = home_of(u, uc->from);

		if (h)
			h->inflight++;
	}
}

/* A verified block: its last piece written, the file synced, then marked. */
static int block_mark(struct node_update *u, uint32_t i)
{
	uint8_t byte;

	if (fdatasync(u->part_fd) < 0)
		return -errno;
	u->bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
	byte = u->bitmap[i / 8];
	if (pwrite(u->blk_fd, &byte, 1, UPDATE_BLOCKS_HEAD_BYTES + i / 8) != 1)
		return -errno;
	if (fdatasync(u->blk_fd) < 0)
		return -errno;
	u->nmarked++;
	u->done_bytes += ovl_fleet_block_len(&u->rel, i);
	u->blocks_verified++;
	return 0;
}

static int write_full_at(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void piece_done(void *arg, struct ovl_dpc_call *call)
{
	struct ucall *uc = arg;
	struct node_update *u = uc->u;
	struct fslot *s = &u->slots[uc->si];
	const struct ovl_wire_resp *rs = &call->resp;
	uint64_t blen;
	char fp[OVL_ID_FP_BYTES];
	int rc;

	if (!u->dying) {
		/* how fast the home answered (any answer: also one dropped) */
		struct update_home *h = home_of(u, uc->from);
		uint64_t now = ovl_mono_ms();

		if (h) {
			if (h->inflight)
				h->inflight--;
			update_home_note(h, call->result == 0 && call->resp.status == OVL_WIRE_OK &&
						    call->body_len == uc->len,
					 call->body_len, now - uc->t0, now);
		}
	}
	if (u->dying || uc->gen != s->gen || !s->busy || u->phase != PH_FETCH) {
		ucall_free(uc);
		return;
	}
	s->call_out = false;
	blen = ovl_fleet_block_len(&u->rel, s->i);
	if (call->result < 0 || rs->status != OVL_WIRE_OK) {
		snprintf(u->last_err, sizeof(u->last_err), "%s",
			 call->result < 0 ? call->err : rs->message);
		block_next_home(u, uc->si, false);
		ucall_free(uc);
		return;
	}
	u->bytes_fetched += call->body_len;
	ovl_nodeid_fingerprint(uc->from, fp);
	if (rs->size != blen || rs->offset != uc->off || call->body_len != uc->len ||
	    (rs->has_crc && ovl_crc32c(0, call->body, (size_t)call->body_len) != rs->crc)) {
		u->blocks_bad++;
		event(u, NODE_UPDATE_EV_WARN,
		      "update: block %u of release %s: node %s answered %" PRIu64 " bytes of an object of %" PRIu64
		      " (want %" PRIu64 " of %" PRIu64 "); fetching it from another home",
		      s->i, u->rel.version, fp, (uint64_t)call->body_len, rs->size, uc->len, blen);
		block_next_home(u, uc->si, true);
		ucall_free(uc);
		return;
	}
	crypto_hash_sha256_update(&s->h, call->body, (size_t)call->body_len);
	if (uc->off + uc->len == blen) {
		uint8_t md[32];

		crypto_hash_sha256_final(&s->h, md);
		if (sodium_memcmp(md, u->rel.blocks[s->i], 32) != 0) {
			u->blocks_bad++;
			event(u, NODE_UPDATE_EV_WARN,
			      "update: block %u of release %s from node %s does not verify (SHA-256 differs from "
			      "the release's); fetching it from another home", s->i, u->rel.version, fp);
			block_next_home(u, uc->si, true);
			ucall_free(uc);
			return;
		}
	}
	rc = write_full_at(u->part_fd, call->body, (size_t)call->body_len,
			   (uint64_t)s->i * u->rel.block_size + uc->off);
	if (rc == 0 && uc->off + uc->len == blen)
		rc = block_mark(u, s->i);
	if (rc < 0) {
		ucall_free(uc);
		fail(u, "release %s: cannot write the image in '%s/update': %s", u->rel.version, u->dir,
		     strerror(-rc));
		return;
	}
	s->off += uc->len;
	u->kick = true;
	if (s->off == blen) {
		slot_free(u, uc->si);
		if (u->nmarked == u->rel.nblocks) {
			event(u, NODE_UPDATE_EV_INFO,
			      "update: release %s: all %u blocks fetched and verified; checking the whole payload",
			      u->rel.version, u->rel.nblocks);
			hash_begin(u);
		}
	}
	ucall_free(uc);
}

static void update_free(struct node_update *u)
{
	release_drop(u);
	free(u);
}

static void ucall_free(struct ucall *uc)
{
	struct node_update *u = uc->u;

	free(uc);
	if (--u->refs == 0 && u->dying)
		update_free(u);
}

void update_pump_plan(unsigned n, const bool *slot_busy, const bool *call_out,
		      const uint8_t *bitmap, struct update_blk *blks, uint32_t nblocks,
		      uint64_t now_ms, uint8_t *act, uint32_t *take)
{
	uint32_t next = 0;

	for (unsigned si = 0; si < n; si++) {
		act[si] = UPDATE_PUMP_NONE;
		if (slot_busy[si]) {
			if (!call_out[si])
				act[si] = UPDATE_PUMP_ASK;
			continue;
		}
		for (; next < nblocks; next++)
			if (!(bitmap[next / 8] & (1u << (next % 8))) && !blks[next].busy &&
			    blks[next].next_ms <= now_ms)
				break;
		if (next == nblocks)
			continue; /* no block for this slot; the busy slots after it still ask */
		act[si] = UPDATE_PUMP_TAKE;
		take[si] = next;
		blks[next].busy = true;
	}
}

static void fetch_pump(struct node_update *u, uint64_t now)
{
	bool busy[NODE_UPDATE_INFLIGHT_MAX] = { 0 }, out[NODE_UPDATE_INFLIGHT_MAX] = { 0 };
	uint8_t act[NODE_UPDATE_INFLIGHT_MAX] = { 0 };
	uint32_t take[NODE_UPDATE_INFLIGHT_MAX] = { 0 };
	unsigned n = u->o.inflight;

	if (!u->repl || u->phase != PH_FETCH)
		return;
	for (unsigned si = 0; si < n; si++) {
		busy[si] = u->slots[si].busy;
		out[si] = u->slots[si].call_out;
	}
	update_pump_plan(n, busy, out, u->bitmap, u->blks, u->rel.nblocks, now, act, take);
	/* a slot's ask may end the fetch (fail() drops the blocks): stop then */
	for (unsigned si = 0; si < n && u->phase == PH_FETCH; si++) {
		struct fslot *s = &u->slots[si];

		if (act[si] == UPDATE_PUMP_TAKE) {
			s->busy = true;
			s->i = take[si];
			s->off = 0;
			s->call_out = false;
			crypto_hash_sha256_init(&s->h);
		}
		if (act[si] != UPDATE_PUMP_NONE)
			slot_ask(u, si, now);
	}
}

/* ---- hash, extract, install ------------------------------------------------ */

static void hash_step(struct node_update *u)
{
	uint8_t *buf = malloc(UPDATE_HASH_READ_BYTES), md[32];
	uint64_t end = u->hash_off + UPDATE_HASH_STEP_BYTES;

	if (!buf)
		return;
	if (end > u->rel.size)
		end = u->rel.size;
	while (u->hash_off < end) {
		size_t want = end - u->hash_off > UPDATE_HASH_READ_BYTES ? UPDATE_HASH_READ_BYTES
									 : (size_t)(end - u->hash_off);
		ssize_t n = pread(u->part_fd, buf, want, (off_t)u->hash_off);

		if (n <= 0) {
			free(buf);
			fail(u, "release %s: cannot read the fetched image: %s", u->rel.version,
			     n < 0 ? strerror(errno) : "short file");
			return;
		}
		crypto_hash_sha256_update(&u->hh, buf, (size_t)n);
		u->hash_off += (uint64_t)n;
	}
	free(buf);
	if (u->hash_off < u->rel.size)
		return;
	crypto_hash_sha256_final(&u->hh, md);
	if (sodium_memcmp(md, u->rel.sha256, 32) != 0) {
		char bp[UPDATE_PATH_BYTES];

		/* every block verified but the whole does not: start over next time */
		path(u, bp, sizeof(bp), "update/image.blocks");
		unlink(bp);
		fail(u, "release %s: the payload's SHA-256 is not the release's", u->rel.version);
		return;
	}
	{
		char xn[UPDATE_PATH_BYTES], pp[UPDATE_PATH_BYTES], lp[UPDATE_PATH_BYTES],
			sl[UPDATE_PATH_BYTES];
		char *argv[] = { "tar", "-x", "--no-same-owner", "-f", pp, "-C", xn, NULL };
		posix_spawn_file_actions_t fa;
		int rc;

		slot_path(u, xn, sizeof(xn), other_slot(u), ".new");
		path(u, pp, sizeof(pp), "update/image.part");
		path(u, lp, sizeof(lp), "update/tar.log");
		path(u, sl, sizeof(sl), "slots");
		rc = rm_tree(xn);
		if (rc == 0 && mkdir(sl, 0755) < 0 && errno != EEXIST)
			rc = -errno;
		if (rc == 0 && mkdir(xn, 0755) < 0)
			rc = -errno;
		if (rc < 0) {
			fail(u, "release %s: cannot make '%s': %s", u->rel.version, xn, strerror(-rc));
			return;
		}
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
		posix_spawn_file_actions_addopen(&fa, 1, lp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		posix_spawn_file_actions_adddup2(&fa, 1, 2);
		rc = posix_spawnp(&u->tar_pid, "tar", &fa, NULL, argv, environ);
		posix_spawn_file_actions_destroy(&fa);
		if (rc != 0) {
			u->tar_pid = 0;
			fail(u, "release %s: cannot run tar: %s", u->rel.version, strerror(rc));
			return;
		}
		u->tar_start_ms = ovl_mono_ms();
		u->phase = PH_EXTRACT;
	}
}

/* The first line of update/tar.log, for a reason. */
static void tar_log(struct node_update *u, char *out, size_t len)
{
	char p[UPDATE_PATH_BYTES];
	uint8_t *buf = NULL;
	size_t n = 0;

	out[0] = 0;
	path(u, p, sizeof(p), "update/tar.log");
	if (read_file(p, &buf, &n, 1 << 20) < 0)
		return;
	snprintf(out, len, "%s", (char *)buf);
	out[strcspn(out, "\n")] = 0;
	clean_text(out);
	free(buf);
}

/* The extracted slot X.new becomes slot X: checked, synced, named. */
static void install(struct node_update *u)
{
	char xn[UPDATE_PATH_BYTES], x[UPDATE_PATH_BYTES], xo[UPDATE_PATH_BYTES],
		f[UPDATE_PATH_BYTES + 32], err[256];
	char slot = other_slot(u);
	uint8_t *ver = NULL;
	size_t vlen = 0;
	struct boot_state st;
	int rc;

	slot_path(u, xn, sizeof(xn), slot, ".new");
	slot_path(u, x, sizeof(x), slot, "");
	slot_path(u, xo, sizeof(xo), slot, ".old");
	snprintf(f, sizeof(f), "%s/VERSION", xn);
	if (read_file(f, &ver, &vlen, 64) < 0) {
		fail(u, "release %s: the payload holds no VERSION", u->rel.version);
		goto out;
	}
	ver[strcspn((char *)ver, "\r\n")] = 0;
	if (strcmp((char *)ver, u->rel.version) != 0) {
		clean_text((char *)ver);
		fail(u, "release %s: the payload's VERSION says '%.24s'", u->rel.version, (char *)ver);
		goto out;
	}
	snprintf(f, sizeof(f), "%s/bin/shelf-node", xn);
	if (access(f, X_OK) < 0) {
		fail(u, "release %s: the payload holds no executable bin/shelf-node", u->rel.version);
		goto out;
	}
	rc = sync_tree(xn);
	if (rc < 0) {
		fail(u, "release %s: cannot sync '%s': %s", u->rel.version, xn, strerror(-rc));
		goto out;
	}
	/* the old slot X leaves the boot state before its directory goes, so
	 * the chooser never names a slot that is not complete */
	rc = boot_state_load(u->dir, &st, err, sizeof(err));
	if (rc == 0 && st.s[boot_slot_index(slot)].present) {
		st.s[boot_slot_index(slot)].present = false;
		memset(&st.s[boot_slot_index(slot)], 0, sizeof(st.s[0]));
		st.primary = u->o.slot;
		if (st.last == slot)
			st.last = u->o.slot;
		rc = boot_state_save_err(u->dir, &st, err, sizeof(err));
	}
	if (rc < 0) {
		fail(u, "release %s: boot state: %s", u->rel.version, err);
		goto out;
	}
	if ((rc = rm_tree(xo)) < 0 || (access(x, F_OK) == 0 && rename(x, xo) < 0 && (rc = -errno)) ||
	    (rc = rm_tree(xo)) < 0 || (rename(xn, x) < 0 && (rc = -errno)) ||
	    (rc = ovl_file_sync_parent(x)) < 0) {
		fail(u, "release %s: cannot make slot '%s': %s", u->rel.version, x, strerror(-rc));
		goto out;
	}
	rc = boot_state_set_try(u->dir, slot, u->rel.version);
	if (rc < 0) {
		fail(u, "release %s: cannot mark slot %c to be tried: %s", u->rel.version, slot,
		     strerror(-rc));
		goto out;
	}
	event(u, NODE_UPDATE_EV_INFO,
	      "update: release %s installed in slot %c (marked to be tried; %" PRIu64 " bytes fetched by this run, %" PRIu64 " blocks verified)",
	      u->rel.version, slot, u->bytes_fetched, u->blocks_verified);
	u->state = OVL_FLEET_STATE_INSTALLED;
	u->reason[0] = 0;
	u->done_bytes = u->rel.size;
	{
		char pp[UPDATE_PATH_BYTES], bp[UPDATE_PATH_BYTES];
		bool g;

		fetch_close(u);
		path(u, pp, sizeof(pp), "update/image.part");
		path(u, bp, sizeof(bp), "update/image.blocks");
		unlink(bp);
		unlink(pp);
		boot_view(u, &st, &g);
	}
	state_save(u);
out:
	free(ver);
}

static void extract_check(struct node_update *u)
{
	int status = 0;
	pid_t r = waitpid(u->tar_pid, &status, WNOHANG);
	char why[200];

	if (r == 0) {
		if (ovl_mono_ms() - u->tar_start_ms > UPDATE_EXTRACT_TIMEOUT_MS) {
			fail(u, "release %s: extracting the payload took longer than %d s",
			     u->rel.version, UPDATE_EXTRACT_TIMEOUT_MS / 1000);
		}
		return;
	}
	u->tar_pid = 0;
	if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		tar_log(u, why, sizeof(why));
		fail(u, "release %s: extracting the payload failed (tar %s %d)%s%s", u->rel.version,
		     r > 0 && WIFSIGNALED(status) ? "killed by signal" : "exit",
		     r > 0 && WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
		     why[0] ? ": " : "", why);
		return;
	}
	install(u);
}

/* ---- assignments --------------------------------------------------------------- */

/* Verify the release of an assignment; 0 or -errno with err. */
static int release_check(struct node_update *u, const struct ovl_fleet_assign *a,
			 struct ovl_fleet_release *r, char *err, size_t errlen)
{
	const struct ovl_crl *crl = u->o.crl ? u->o.crl(u->o.arg) : NULL;
	const struct ovl_crl *crls[1] = { crl };
	struct ovl_trust t = { { 0 }, crl ? crls : NULL, crl ? 1u : 0u };

	memcpy(t.ca_pk, u->o.ca_pk, OVL_ID_BYTES);
	return ovl_fleet_release_verify(r, a->release, a->release_len, a->cert, a->cert_len, &t,
					now_s(u), u->board, u->running, err, errlen);
}

static int assign_store(struct node_update *u, const uint8_t *buf, size_t len,
			const uint8_t bpk[OVL_ID_BYTES])
{
	char p[UPDATE_PATH_BYTES], err[256];

	memcpy(u->bkey, bpk, OVL_ID_BYTES);
	u->have_bkey = true;
	path(u, p, sizeof(p), "update/assign");
	if (ovl_file_write_atomic(p, buf, len, 0600, err, sizeof(err)) < 0) {
		event(u, NODE_UPDATE_EV_ERROR, "update: %s", err);
		return -EIO;
	}
	return 0;
}

/* Take up the fetch of a verified assignment (fresh or resumed). */
static void fetch_take(struct node_update *u, const struct ovl_fleet_assign *a, bool resumed)
{
	struct ovl_fleet_release r;
	char err[300];
	int rc;

	if (!u->o.slot) {
		fail(u, "this node was not started by shelf-boot: it has no slot to install into");
		return;
	}
	rc = release_check(u, a, &r, err, sizeof(err));
	if (rc < 0) {
		fail(u, "%s", err);
		return;
	}
	if (!resumed && u->have_rel && memcmp(r.id, u->rel.id, 32) == 0 &&
	    (u->state == OVL_FLEET_STATE_FETCHING)) {
		/* the same release, still being fetched: only its rate may change */
		u->arate = a->rate;
		req_bucket_set_rate(&u->bucket, fetch_rate(u), ovl_mono_ms());
		ovl_fleet_release_free(&r);
		state_save(u);
		return;
	}
	if (!resumed && strcmp(u->running, r.version) == 0 &&
	    u->state == OVL_FLEET_STATE_HEALTHY) {
		ovl_fleet_release_free(&r);
		state_save(u);
		return;
	}
	if (!resumed && u->state == OVL_FLEET_STATE_INSTALLED && strcmp(u->target, r.version) == 0 &&
	    strcmp(u->other, r.version) == 0) {
		ovl_fleet_release_free(&r);
		state_save(u);
		return; /* installed already */
	}
	release_drop(u);
	u->rel = r;
	u->have_rel = true;
	snprintf(u->slice, sizeof(u->slice), "%s", a->slice);
	u->arate = a->rate;
	fetch_begin(u);
}

/* An installed slot not restarted into stops being the one tried next. */
static void untry(struct node_update *u)
{
	struct boot_state st;
	char err[256];
	bool g;

	if (!u->o.slot || boot_state_load(u->dir, &st, err, sizeof(err)) < 0 || st.primary == u->o.slot)
		return;
	st.primary = u->o.slot;
	if (boot_state_save_err(u->dir, &st, err, sizeof(err)) < 0)
		event(u, NODE_UPDATE_EV_ERROR, "update: boot state: %s", err);
	boot_view(u, &st, &g);
}

static void assign_take(struct node_update *u, const uint8_t *buf, size_t len,
			const uint8_t bpk[OVL_ID_BYTES], const char *from)
{
	struct ovl_fleet_assign a;
	uint8_t h[32];
	char err[300], fp[OVL_ID_FP_BYTES];
	uint64_t now = now_s(u);
	int rc;

	crypto_hash_sha256(h, buf, len);
	if (memcmp(h, u->last_env, 32) == 0)
		return; /* the director repeats itself until the report says it was taken */
	memcpy(u->last_env, h, 32);
	rc = ovl_fleet_assign_verify(&a, buf, len, bpk, err, sizeof(err));
	if (rc < 0) {
		event(u, NODE_UPDATE_EV_WARN, "update: assignment from %s refused: %s", from, err);
		return;
	}
	if (memcmp(a.node, u->id, OVL_ID_BYTES) != 0) {
		ovl_nodeid_fingerprint(a.node, fp);
		event(u, NODE_UPDATE_EV_WARN, "update: assignment from %s refused: it is for node %s",
		      from, fp);
		return;
	}
	if (a.seq <= u->seq)
		return;
	u->seq = a.seq;
	if (!now) {
		fail(u, "assignment %" PRIu64 ": this node has no trusted time yet", a.seq);
		return;
	}
	if (ovl_fleet_assign_fresh(&a, now, err, sizeof(err)) < 0) {
		fail(u, "assignment %" PRIu64 ": %s", a.seq, err);
		return;
	}
	event(u, NODE_UPDATE_EV_INFO, "update: assignment %" PRIu64 " from %s: %s%s%s", a.seq, from,
	      ovl_fleet_action_name(a.action) ? ovl_fleet_action_name(a.action) : "?",
	      a.release_len ? " of slice " : "", a.release_len ? a.slice : "");
	switch (a.action) {
	case OVL_FLEET_ACTION_STAY:
		if (u->state == OVL_FLEET_STATE_INSTALLED || u->state == OVL_FLEET_STATE_RESTARTING)
			untry(u);
		release_drop(u);
		u->resume = false;
		if (u->state != OVL_FLEET_STATE_HEALTHY) {
			u->state = OVL_FLEET_STATE_IDLE;
			u->target[0] = 0;
			u->reason[0] = 0;
		}
		state_save(u);
		break;
	case OVL_FLEET_ACTION_FETCH:
		if (assign_store(u, buf, len, bpk) < 0) {
			fail(u, "assignment %" PRIu64 ": cannot be kept in '%s/update'", a.seq, u->dir);
			break;
		}
		u->resume = false;
		fetch_take(u, &a, false);
		break;
	case OVL_FLEET_ACTION_RESTART: {
		struct ovl_fleet_release r;

		rc = release_check(u, &a, &r, err, sizeof(err));
		if (rc < 0) {
			fail(u, "%s", err);
			break;
		}
		if (u->state != OVL_FLEET_STATE_INSTALLED || strcmp(u->target, r.version) != 0) {
			fail(u, "restart into release %s assigned, but it is not installed (state %s)",
			     r.version, ovl_fleet_state_name(u->state));
			ovl_fleet_release_free(&r);
			break;
		}
		ovl_fleet_release_free(&r);
		u->state = OVL_FLEET_STATE_RESTARTING;
		u->rep_sent = false;
		u->restart_ms = ovl_mono_ms();
		state_save(u);
		event(u, NODE_UPDATE_EV_INFO,
		      "update: restarting into slot %c (release %s) once the broker has heard so",
		      other_slot(u), u->target);
		break;
	}
	default:
		fail(u, "assignment %" PRIu64 ": action %s is not supported", a.seq,
		     ovl_fleet_action_name(a.action) ? ovl_fleet_action_name(a.action) : "unknown");
		break;
	}
}

/* A fetch under way when the node stopped: verify again and go on. */
static void resume(struct node_update *u)
{
	char p[UPDATE_PATH_BYTES], err[300];
	struct ovl_fleet_assign a;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	u->resume = false;
	path(u, p, sizeof(p), "update/assign");
	rc = read_file(p, &buf, &len, OVL_FLEET_ASSIGN_MAX_BYTES);
	if (rc < 0 || !u->have_bkey) {
		fail(u, "cannot resume the fetch: '%s' cannot be read", p);
		goto out;
	}
	rc = ovl_fleet_assign_verify(&a, buf, len, u->bkey, err, sizeof(err));
	if (rc < 0 || a.action != OVL_FLEET_ACTION_FETCH) {
		fail(u, "cannot resume the fetch: '%s': %s", p, rc < 0 ? err : "not a fetch");
		goto out;
	}
	fetch_take(u, &a, true);
out:
	free(buf);
}

static void inject_check(struct node_update *u)
{
	char p[UPDATE_PATH_BYTES];
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	path(u, p, sizeof(p), "update/assign.inject");
	if (access(p, F_OK) < 0)
		return;
	rc = read_file(p, &buf, &len, OVL_FLEET_ASSIGN_MAX_BYTES);
	unlink(p);
	if (rc < 0) {
		event(u, NODE_UPDATE_EV_WARN, "update: '%s' cannot be read: %s", p, strerror(-rc));
		return;
	}
	for (unsigned i = 0; u->o.broker_key; i++) {
		const uint8_t *k = u->o.broker_key(u->o.arg, i);
		struct ovl_fleet_assign a;
		char err[200];

		if (!k)
			break;
		if (ovl_fleet_assign_verify(&a, buf, len, k, err, sizeof(err)) == 0) {
			assign_take(u, buf, len, k, "assign.inject");
			free(buf);
			return;
		}
	}
	event(u, NODE_UPDATE_EV_WARN,
	      "update: assignment in '%s' refused: its signature is not that of a broker this node is registered with", p);
	free(buf);
}

/* ---- the agent ------------------------------------------------------------------- */

int node_update_new(struct node_update **out, const struct node_update_opts *o, char *err,
		    size_t errlen)
{
	struct node_update *u = NULL;
	char p[UPDATE_PATH_BYTES];
	struct boot_state st;
	bool found = false, good = false;
	int rc = 0;

	*out = NULL;
	if (!o->dir || !o->board || !o->node_id || !o->running || o->inflight < 1 ||
	    o->inflight > NODE_UPDATE_INFLIGHT_MAX || (o->slot && o->slot != 'a' && o->slot != 'b') ||
	    strlen(o->dir) >= UPDATE_PATH_BYTES / 2 - 16) {
		snprintf(err, errlen, "update: a directory, board, node id, running version, slot a/b "
			 "and 1..%d blocks in flight are required", NODE_UPDATE_INFLIGHT_MAX);
		return -EINVAL;
	}
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->o = *o;
	u->refs = 1;
	u->part_fd = u->blk_fd = -1;
	snprintf(u->dir, sizeof(u->dir), "%s", o->dir);
	snprintf(u->board, sizeof(u->board), "%s", o->board);
	snprintf(u->running, sizeof(u->running), "%s", o->running);
	memcpy(u->id, o->node_id, OVL_ID_BYTES);
	u->o.dir = u->dir;
	u->o.board = u->board;
	u->o.running = u->running;
	u->o.node_id = u->id;
	path(u, p, sizeof(p), "update");
	if (mkdir(p, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create '%s': %s", p, strerror(errno));
		goto out;
	}
	state_load(u, &found);
	if (o->slot) {
		char xn[UPDATE_PATH_BYTES];

		/* an install killed before its rename */
		slot_path(u, xn, sizeof(xn), other_slot(u), ".new");
		rm_tree(xn);
		slot_path(u, xn, sizeof(xn), other_slot(u), ".old");
		rm_tree(xn);
		if (boot_view(u, &st, &good) < 0)
			memset(&st, 0, sizeof(st));
	} else {
		memset(&st, 0, sizeof(st));
	}
	switch (found ? u->state : OVL_FLEET_STATE_IDLE) {
	case OVL_FLEET_STATE_INSTALLED:
	case OVL_FLEET_STATE_RESTARTING:
		if (u->target[0] && strcmp(u->running, u->target) == 0) {
			u->state = good ? OVL_FLEET_STATE_HEALTHY : OVL_FLEET_STATE_RESTARTING;
			u->rep_sent = true; /* restarted already: nothing to wait for */
		} else if (st.fallback[0]) {
			u->state = OVL_FLEET_STATE_ROLLED_BACK;
			snprintf(u->reason, sizeof(u->reason), "release %s: %.200s", u->target, st.fallback);
			event(u, NODE_UPDATE_EV_WARN, "update: rolled back: %s", u->reason);
		} else if (u->state == OVL_FLEET_STATE_RESTARTING) {
			u->state = OVL_FLEET_STATE_ROLLED_BACK;
			snprintf(u->reason, sizeof(u->reason),
				 "release %s: restarted into slot %c, version %s, not the installed one",
				 u->target, o->slot ? o->slot : '-', u->running);
			event(u, NODE_UPDATE_EV_WARN, "update: rolled back: %s", u->reason);
		}
		break;
	case OVL_FLEET_STATE_FETCHING:
		u->resume = true;
		break;
	case OVL_FLEET_STATE_IDLE:
		if (!found && st.fallback[0]) {
			u->state = OVL_FLEET_STATE_ROLLED_BACK;
			snprintf(u->reason, sizeof(u->reason), "%s", st.fallback);
			event(u, NODE_UPDATE_EV_WARN, "update: rolled back: %s", u->reason);
		}
		break;
	default:
		break;
	}
	clean_text(u->reason);
	if (found || u->state != OVL_FLEET_STATE_IDLE)
		state_save(u);
out:
	if (rc < 0) {
		update_free(u);
		u = NULL;
	}
	*out = u;
	return rc;
}

void node_update_repl_set(struct node_update *u, struct node_repl *repl)
{
	if (u)
		u->repl = repl;
}

void node_update_destroy(struct node_update **up)
{
	struct node_update *u = up ? *up : NULL;

	if (!u)
		return;
	*up = NULL;
	fetch_close(u); /* slots' generations move on: late answers are dropped */
	u->dying = true;
	if (--u->refs == 0)
		update_free(u);
}

void node_update_heartbeat_ok(struct node_update *u, const uint8_t *buf, size_t len,
			      const uint8_t broker_pk[OVL_ID_BYTES])
{
	if (!u)
		return;
	if (u->state == OVL_FLEET_STATE_RESTARTING && u->rep_sent &&
	    strcmp(u->running, u->target) != 0)
		u->exit_wanted = true;
	if (len)
		assign_take(u, buf, len, broker_pk, "the broker");
}

void node_update_report_get(struct node_update *u, struct ovl_fleet_report *r)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->running, sizeof(r->running), "%s", u->running);
	if (u->o.slot)
		snprintf(r->slot, sizeof(r->slot), "%c", u->o.slot);
	snprintf(r->board, sizeof(r->board), "%s", u->board);
	r->state = u->state;
	snprintf(r->target, sizeof(r->target), "%s", u->target);
	r->seq = u->seq;
	r->total = u->have_rel ? u->rel.size : u->total;
	r->done = u->state == OVL_FLEET_STATE_FETCHING ? u->done_bytes
		  : u->state == OVL_FLEET_STATE_IDLE || u->state == OVL_FLEET_STATE_FAILED ? 0
											    : r->total;
	snprintf(r->reason, sizeof(r->reason), "%s", u->reason);
	r->degraded = u->o.degraded ? u->o.degraded(u->o.arg) : 0;
	snprintf(r->other, sizeof(r->other), "%s", u->other);
	r->other_good = u->other_good;
}

int node_update_report(struct node_update *u, uint8_t *buf, size_t cap)
{
	struct ovl_fleet_report r;

	node_update_report_get(u, &r);
	if (u->state == OVL_FLEET_STATE_RESTARTING)
		u->rep_sent = true;
	return ovl_fleet_report_encode(&r, buf, cap);
}

void node_update_poll(struct node_update *u, uint64_t now_ms)
{
	if (!u || !u->kick)
		return;
	u->kick = false;
	if (u->phase == PH_FETCH)
		fetch_pump(u, now_ms);
}

void node_update_tick(struct node_update *u, uint64_t now_ms)
{
	if (!u)
		return;
	if (now_ms - u->inject_ms >= UPDATE_INJECT_CHECK_MS) {
		u->inject_ms = now_ms;
		if (now_s(u))
			inject_check(u);
	}
	if (u->resume && now_s(u))
		resume(u);
	switch (u->phase) {
	case PH_FETCH:
		fetch_pump(u, now_ms);
		break;
	case PH_HASH:
		hash_step(u);
		break;
	case PH_EXTRACT:
		extract_check(u);
		break;
	default:
		break;
	}
	if (u->state == OVL_FLEET_STATE_RESTARTING && strcmp(u->running, u->target) != 0 &&
	    now_ms >= u->restart_ms + UPDATE_RESTART_WAIT_MS)
		u->exit_wanted = true;
	if (now_ms - u->boot_check_ms >= UPDATE_BOOT_CHECK_MS) {
		struct boot_state st;
		bool good = false;

		u->boot_check_ms = now_ms;
		if (boot_view(u, &st, &good) == 0 && good && u->state == OVL_FLEET_STATE_RESTARTING &&
		    strcmp(u->running, u->target) == 0) {
			u->state = OVL_FLEET_STATE_HEALTHY;
			u->reason[0] = 0;
			state_save(u);
			event(u, NODE_UPDATE_EV_INFO,
			      "update: release %s runs in slot %c and passed its health gate", u->target,
			      u->o.slot);
		}
	}
}

bool node_update_exit_wanted(const struct node_update *u)
{
	return u && u->exit_wanted;
}

unsigned node_update_counters(const struct node_update *u, struct ovl_wire_counter *c,
			      unsigned max)
{
	unsigned n = 0;

	if (!u)
		return 0;
	{
		const struct {
			const char *name;
			uint64_t v;
		} t[] = {
			{ "update_state", u->state },
			{ "update_seq", u->seq },
			{ "update_bytes_fetched", u->bytes_fetched },
			{ "update_blocks_verified", u->blocks_verified },
			{ "update_blocks_bad", u->blocks_bad },
			{ "update_bytes_done", u->state == OVL_FLEET_STATE_FETCHING ? u->done_bytes : 0 },
			{ "update_bytes_total", u->have_rel ? u->rel.size : u->total },
		};

		for (; n < max && n < sizeof(t) / sizeof(t[0]); n++) {
			snprintf(c[n].name, sizeof(c[n].name), "%s", t[n].name);
			c[n].value = t[n].v;
		}
	}
	return n;
}
