/*
 * test_broker_members: the broker's membership on disk (brk_members.c): a
 * base snapshot (state/members) and a journal of changes (state/members.log).
 * Replay, a torn tail (dropped), a damaged record with valid ones after it
 * (refused, naming file and line), compaction, a crash between the steps of
 * a compaction (each intermediate state prepared as files), a base of the
 * previous format, and a seeded model check (SEED=n replays one seed, LONG=1
 * runs more rounds).
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker.h"

#define POOL 64                 /* node ids the changes draw from */
#define CERT_MAX 300

struct fx {
	char dir[64];
	char base[96], log[96];
	uint64_t rng;
	uint8_t certs[POOL][CERT_MAX]; /* what NODE changes borrow */
};

static uint64_t rnd(struct fx *f)
{
	f->rng ^= f->rng << 13;
	f->rng ^= f->rng >> 7;
	f->rng ^= f->rng << 17;
	return f->rng;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_broker_members.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->base, sizeof(f->base), "%s/members", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/members.log", f->dir);
	f->rng = 0x9e3779b97f4a7c15ull;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* ---- files ---------------------------------------------------------------------- */

static char *file_read(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	long n;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = 0;
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

static void file_write(const char *path, const void *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

static void file_append(const char *path, const void *buf, size_t len)
{
	FILE *fp = fopen(path, "ab");

	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

static void file_copy(const char *from, const char *to)
{
	size_t len;
	char *b = file_read(from, &len);

	file_write(to, b, len);
	free(b);
}

static size_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (size_t)st.st_size;
}

/* The offset of line `line` (1-based) in buf. */
static size_t line_at(const char *buf, unsigned line)
{
	size_t off = 0;

	for (unsigned l = 1; l < line; l++) {
		const char *nl = strchr(buf + off, '\n');

		assert_non_null(nl);
		off = (size_t)(nl - buf) + 1;
	}
	return off;
}

/* Change one character of line `line` of path, at `col` (a hex digit or a
 * letter: it stays printable, so only the checksum can tell). */
static void flip(const char *path, unsigned line, size_t col)
{
	size_t len;
	char *b = file_read(path, &len);
	size_t at = line_at(b, line) + col;

	assert_true(at < len && b[at] != '\n');
	b[at] = b[at] == '0' ? '1' : '0';
	file_write(path, b, len);
	free(b);
}

static unsigned lines_of(const char *path)
{
	size_t len;
	char *b = file_read(path, &len);
	unsigned n = 0;

	for (size_t i = 0; i < len; i++)
		n += b[i] == '\n';
	free(b);
	return n;
}

/* ---- changes ---------------------------------------------------------------------- */

static void id_of(unsigned i, uint8_t id[OVL_ID_BYTES])
{
	for (unsigned k = 0; k < OVL_ID_BYTES; k++)
		id[k] = (uint8_t)(i * 37 + k * 11 + (k == 0 ? i >> 8 : 0) + 1);
	id[31] = (uint8_t)i;
}

static struct brk_change ch_node(struct fx *f, unsigned i, unsigned version)
{
	struct brk_change c;
	size_t cl = 40 + (i * 7 + version) % (CERT_MAX - 40);

	memset(&c, 0, sizeof(c));
	c.op = BRK_CHANGE_NODE;
	id_of(i, c.node.id);
	for (unsigned k = 0; k < OVL_KEY_BYTES; k++)
		c.node.curve_key[k] = (uint8_t)(c.node.id[k] ^ 0x5a);
	snprintf(c.node.board, sizeof(c.node.board), "sim");
	snprintf(c.node.version, sizeof(c.node.version), "1.%u", version);
	snprintf(c.node.domain.site, sizeof(c.node.domain.site), "site-a");
	snprintf(c.node.domain.chassis, sizeof(c.node.domain.chassis), "c%u", i % 3);
	snprintf(c.node.domain.slot, sizeof(c.node.domain.slot), "s%u", i);
	if (i % 2)
		snprintf(c.node.group, sizeof(c.node.group), "g%u", i % 5);
	c.node.capacity = 1000000ull * (i + 1);
	c.node.serial = 100 + version;
	c.node.port = (uint16_t)(7000 + i);
	c.node.state = (uint8_t)(OVL_MSG_STATE_UP + (i + version) % 3);
	for (size_t k = 0; k < cl; k++)
		f->certs[i % POOL][k] = (uint8_t)(k * 13 + i + version);
	c.node.cert = f->certs[i % POOL];
	c.node.cert_len = cl;
	return c;
}

static struct brk_change ch_slice(enum brk_change_op op, const char *slice, unsigned i)
{
	struct brk_change c;

	memset(&c, 0, sizeof(c));
	c.op = op;
	snprintf(c.slice, sizeof(c.slice), "%s", slice);
	id_of(i, c.member.id);
	id_of(i, c.left.id);
	id_of(i, c.node.id);
	for (unsigned k = 0; k < OVL_MSG_ADDR_BYTES; k++)
		c.member.addr[k] = (uint8_t)(0xfd + k + i);
	return c;
}

static struct brk_change ch_epoch(const char *slice, uint64_t epoch)
{
	struct brk_change c = ch_slice(BRK_CHANGE_EPOCH, slice, 0);

	c.epoch = epoch;
	return c;
}

static struct brk_change ch_left(const char *slice, unsigned i, uint64_t epoch,
				 enum ovl_msg_left_reason why)
{
	struct brk_change c = ch_slice(BRK_CHANGE_LEFT, slice, i);

	c.left.epoch = epoch;
	c.left.reason = why;
	return c;
}

static struct brk_change ch_state(unsigned i, uint8_t st)
{
	struct brk_change c = ch_slice(BRK_CHANGE_STATE, "", i);

	c.slice[0] = 0;
	c.node.state = st;
	return c;
}

/* Apply c[0..n) to the model m. */
static void model_apply(struct brk_membership *m, const struct brk_change *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_int_equal(brk_membership_apply(m, &c[i]), 0);
}

/* ---- comparing ----------------------------------------------------------------------- */

static const struct brk_node_rec *node_find(const struct brk_membership *m, const uint8_t *id)
{
	for (size_t i = 0; i < m->n_nodes; i++)
		if (memcmp(m->nodes[i].id, id, OVL_ID_BYTES) == 0)
			return &m->nodes[i];
	return NULL;
}

static const struct brk_slice_members *slice_find(const struct brk_membership *m,
						  const char *name)
{
	for (size_t i = 0; i < m->n_slices; i++)
		if (strcmp(m->slices[i].name, name) == 0)
			return &m->slices[i];
	return NULL;
}

static void node_equal(const struct brk_node_rec *a, const struct brk_node_rec *b)
{
	assert_non_null(a);
	assert_non_null(b);
	assert_memory_equal(a->curve_key, b->curve_key, OVL_KEY_BYTES);
	assert_string_equal(a->board, b->board);
	assert_string_equal(a->version, b->version);
	assert_string_equal(a->group, b->group);
	assert_string_equal(a->domain.site, b->domain.site);
	assert_string_equal(a->domain.chassis, b->domain.chassis);
	assert_string_equal(a->domain.slot, b->domain.slot);
	assert_int_equal(a->capacity, b->capacity);
	assert_int_equal(a->serial, b->serial);
	assert_int_equal(a->port, b->port);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->cert_len, b->cert_len);
	if (a->cert_len)
		assert_memory_equal(a->cert, b->cert, a->cert_len);
}

/* got (a load) holds what the model holds: every slice, epoch, member (with
 * its address and node record) and removal record, in the same order. */
static void membership_equal(const struct brk_membership *got,
			     const struct brk_membership *want)
{
	size_t members = 0;

	assert_int_equal(got->n_slices, want->n_slices);
	for (size_t i = 0; i < want->n_slices; i++) {
		const struct brk_slice_members *w = &want->slices[i];
		const struct brk_slice_members *g = slice_find(got, w->name);

		assert_non_null(g);
		assert_int_equal(g->epoch, w->epoch);
		assert_int_equal(g->n_members, w->n_members);
		for (size_t k = 0; k < w->n_members; k++) {
			assert_memory_equal(g->members[k].id, w->members[k].id, OVL_ID_BYTES);
			assert_memory_equal(g->members[k].addr, w->members[k].addr,
					    OVL_MSG_ADDR_BYTES);
			node_equal(node_find(got, w->members[k].id),
				   node_find(want, w->members[k].id));
		}
		assert_int_equal(g->n_left, w->n_left);
		for (size_t k = 0; k < w->n_left; k++) {
			assert_memory_equal(g->left[k].id, w->left[k].id, OVL_ID_BYTES);
			assert_int_equal(g->left[k].epoch, w->left[k].epoch);
			assert_int_equal(g->left[k].reason, w->left[k].reason);
		}
		members += w->n_members;
	}
	/* a load leaves out nodes in no slice */
	assert_true(got->n_nodes <= members);
}

static void load_equal(struct fx *f, const struct brk_membership *want)
{
	struct brk_membership got;
	char err[512] = "";
	int rc = brk_state_members_load(f->dir, &got, err, sizeof(err));

	if (rc < 0)
		print_message("load: %s\n", err);
	assert_int_equal(rc, 0);
	membership_equal(&got, want);
	brk_membership_release(&got);
}

static int load_err(struct fx *f, char *err, size_t errlen)
{
	struct brk_membership got;
	int rc = brk_state_members_load(f->dir, &got, err, errlen);

	assert_null(got.nodes);
	assert_null(got.slices);
	return rc;
}

static void append(struct brk_members_log *l, const struct brk_change *c, size_t n)
{
	char err[256] = "";
	int rc = brk_members_log_append(l, c, n, err, sizeof(err));

	if (rc < 0)
		print_message("append: %s\n", err);
	assert_true(rc == 0 || rc == 1);
}

static struct brk_members_log *open_log(struct fx *f, struct brk_membership *m)
{
	struct brk_members_log *l = NULL;
	char err[512] = "";
	int rc = brk_members_log_open(&l, f->dir, m, err, sizeof(err));

	if (rc < 0)
		print_message("open: %s\n", err);
	assert_int_equal(rc, 0);
	return l;
}

/* Three committed batches of a slice "hot" into f->dir, mirrored in *model;
 * the journal then has 1 + 3 + 4 + 3 lines. */
static void three_batches(struct fx *f, struct brk_membership *model)
{
	struct brk_membership m;
	struct brk_members_log *l = open_log(f, &m);
	struct brk_change a[] = { ch_node(f, 1, 0), ch_slice(BRK_CHANGE_MEMBER, "hot", 1) };
	struct brk_change b[] = { ch_node(f, 2, 0), ch_slice(BRK_CHANGE_MEMBER, "hot", 2),
				  ch_epoch("hot", 3) };
	struct brk_change c[] = { ch_state(1, OVL_MSG_STATE_DOWN), ch_epoch("hot", 4) };

	assert_int_equal(m.n_slices, 0);
	memset(model, 0, sizeof(*model));
	append(l, a, 2);
	model_apply(model, a, 2);
	append(l, b, 3);
	model_apply(model, b, 3);
	append(l, c, 2);
	model_apply(model, c, 2);
	brk_members_log_close(&l);
	assert_null(l);
	assert_int_equal(lines_of(f->log), 1 + 3 + 4 + 3);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* Records replay into what was appended; the file is what broker.h says. */
static void test_replay(void **state)
{
	struct fx *f = *state;
	struct brk_membership model, got;
	struct brk_members_log *l = NULL;
	struct brk_change c[] = {
		ch_node(f, 1, 0), ch_node(f, 2, 0), ch_node(f, 3, 0),
		ch_epoch("hot", 1), ch_slice(BRK_CHANGE_MEMBER, "hot", 1),
		ch_slice(BRK_CHANGE_MEMBER, "hot", 2), ch_slice(BRK_CHANGE_MEMBER, "hot", 3),
		ch_slice(BRK_CHANGE_MEMBER, "cold", 3), ch_epoch("cold", 7),
		ch_state(2, OVL_MSG_STATE_OUT), ch_node(f, 1, 1),
		ch_left("hot", 2, 9, OVL_MSG_LEFT_EXPIRED), ch_slice(BRK_CHANGE_REMOVE, "hot", 2),
		ch_epoch("hot", 9),
	};
	size_t len;
	char *text = NULL, want[64];

	memset(&model, 0, sizeof(model));
	/* an empty directory is an empty membership */
	load_equal(f, &model);
	l = open_log(f, &got);
	assert_int_equal(got.n_nodes + got.n_slices, 0);
	/* in three batches */
	append(l, c, 5);
	append(l, c + 5, 4);
	append(l, c + 9, 5);
	model_apply(&model, c, 14);
	load_equal(f, &model);
	/* node 2 left its only slice: a load leaves it out */
	assert_int_equal(brk_state_members_load(f->dir, &got, want, sizeof(want)), 0);
	assert_int_equal(got.n_nodes, 2);
	assert_int_equal(got.slices[0].n_left, 1);
	assert_int_equal(got.slices[0].left[0].reason, OVL_MSG_LEFT_EXPIRED);
	brk_membership_release(&got);
	/* the journal: "CRC SEQ journal 0", the records, a commit per batch */
	text = file_read(f->log, &len);
	assert_int_equal(lines_of(f->log), 1 + 6 + 5 + 6);
	assert_non_null(strstr(text, " 0 journal 0\n"));
	assert_non_null(strstr(text, " 6 commit 5\n"));
	assert_non_null(strstr(text, " 11 commit 4\n"));
	assert_non_null(strstr(text, " 17 commit 5\n"));
	assert_non_null(strstr(text, " 12 state "));
	snprintf(want, sizeof(want), " 10 epoch cold 7\n");
	assert_non_null(strstr(text, want));
	assert_true(text[8] == ' ');
	free(text);
	/* appending goes on after a reopen, in sequence */
	brk_members_log_close(&l);
	l = open_log(f, &got);
	membership_equal(&got, &model);
	brk_membership_release(&got);
	append(l, c + 13, 1);
	model_apply(&model, c + 13, 1);
	brk_members_log_close(&l);
	load_equal(f, &model);
	text = file_read(f->log, &len);
	assert_non_null(strstr(text, " 19 commit 1\n"));
	free(text);
	brk_membership_release(&model);
}

/* A record cut short, records without their commit, zeros: a torn tail, dropped;
 * opening for appending cuts it off so that the next batch follows a commit. */
static void test_torn_tail(void **state)
{
	struct fx *f = *state;
	struct brk_membership model, got;
	struct brk_members_log *l = NULL;
	struct brk_change d[] = { ch_node(f, 9, 0), ch_slice(BRK_CHANGE_MEMBER, "hot", 9) };
	char keep[128], zeros[4096];
	size_t good, len;
	char *text = NULL;

	three_batches(f, &model);
	good = file_size(f->log);
	snprintf(keep, sizeof(keep), "%s.keep", f->log);
	file_copy(f->log, keep);
	/* 1: half a record, no newline */
	file_append(f->log, "4f2a9c1e 11 node 0101", 21);
	load_equal(f, &model);
	/* 2: a whole batch but its commit (a write cut at a line boundary) */
	file_copy(keep, f->log);
	l = open_log(f, &got);
	brk_membership_release(&got);
	append(l, d, 2);
	brk_members_log_close(&l);
	text = file_read(f->log, &len);
	file_write(f->log, text, line_at(text, lines_of(f->log))); /* without the commit */
	free(text);
	load_equal(f, &model);
	/* 3: a block of zeros after it (the size reached the disk, the data did not) */
	memset(zeros, 0, sizeof(zeros));
	file_append(f->log, zeros, sizeof(zeros));
	load_equal(f, &model);
	/* opening cuts the tail off; the next batch is then whole */
	l = open_log(f, &got);
	membership_equal(&got, &model);
	brk_membership_release(&got);
	assert_int_equal(file_size(f->log), good);
	append(l, d, 2);
	brk_members_log_close(&l);
	model_apply(&model, d, 2);
	load_equal(f, &model);
	/* 4: the last line damaged (a commit): torn too: its batch goes */
	flip(f->log, lines_of(f->log), 3);
	assert_int_equal(brk_state_members_load(f->dir, &got, keep, sizeof(keep)), 0);
	assert_int_equal(slice_find(&got, "hot")->n_members, 2);
	brk_membership_release(&got);
	brk_membership_release(&model);
}

/* A record that fails its check with a valid one after it is damage: the load
 * fails naming the file and the line, and never goes on with less. */
static void test_damaged_record(void **state)
{
	struct fx *f = *state;
	struct brk_membership model, got;
	struct brk_members_log *l = NULL;
	char err[512], keep[128], want[160];

	three_batches(f, &model);
	snprintf(keep, sizeof(keep), "%s.keep", f->log);
	file_copy(f->log, keep);
	/* line 6 is a record of the second batch: two batches follow */
	flip(f->log, 6, 20);
	memset(err, 0, sizeof(err));
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "'%s' line 6 fails its checksum", f->log);
	assert_non_null(strstr(err, want));
	assert_non_null(strstr(err, "damaged"));
	/* a daemon refuses to start on it, and leaves the file as it is */
	assert_int_equal(brk_members_log_open(&l, f->dir, &got, err, sizeof(err)), -EBADMSG);
	assert_null(l);
	assert_non_null(strstr(err, want));
	/* the checksum too, not only the text: line 9 (a record of the last
	 * batch, its commit after it) */
	file_copy(keep, f->log);
	flip(f->log, 9, 2);
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "'%s' line 9 ", f->log);
	assert_non_null(strstr(err, want));
	/* a valid record out of its place: a line repeated */
	file_copy(keep, f->log);
	{
		size_t len;
		char *t = file_read(f->log, &len);
		size_t a = line_at(t, 3), b = line_at(t, 4);

		file_append(f->log, t + a, b - a);
		free(t);
	}
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "line 12 is record 2 where record 11 was expected"));
	/* a change that does not fit (a state for an unknown node), checksum valid */
	file_copy(keep, f->log);
	l = open_log(f, &got);
	brk_membership_release(&got);
	{
		struct brk_change c = ch_state(40, OVL_MSG_STATE_DOWN);

		append(l, &c, 1);
	}
	brk_members_log_close(&l);
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "line 12 is not a valid membership change"));
	brk_membership_release(&model);
}

/* The journal grows past its bound; a compaction writes the base at the next
 * generation and starts the journal again. */
static void test_compaction(void **state)
{
	struct fx *f = *state;
	struct brk_membership model, got;
	struct brk_members_log *l = open_log(f, &got);
	uint64_t base = 0, logb = 0, gen = 9;
	char err[256];
	size_t len;
	char *text = NULL;
	int rc = 0;
	unsigned rounds = 0;

	memset(&model, 0, sizeof(model));
	brk_membership_release(&got);
	brk_members_log_sizes(l, &base, &logb, &gen);
	assert_int_equal(gen, 0);
	assert_int_equal(base, 0);
	while (rc == 0) {
		struct brk_change c[3] = { ch_node(f, rounds % POOL, rounds),
					   ch_slice(BRK_CHANGE_MEMBER, "hot", rounds % POOL),
					   ch_epoch("hot", rounds + 2) };

		rc = brk_members_log_append(l, c, 3, err, sizeof(err));
		assert_true(rc == 0 || rc == 1);
		model_apply(&model, c, 3);
		rounds++;
		assert_true(rounds < 100000);
	}
	brk_members_log_sizes(l, &base, &logb, &gen);
	assert_true(logb >= BRK_MEMBERS_LOG_MIN_BYTES);
	assert_int_equal(logb, file_size(f->log));
	load_equal(f, &model);
	assert_int_equal(brk_members_log_compact(l, &model, err, sizeof(err)), 0);
	brk_members_log_sizes(l, &base, &logb, &gen);
	assert_int_equal(gen, 1);
	assert_int_equal(base, file_size(f->base));
	assert_int_equal(logb, file_size(f->log));
	assert_int_equal(lines_of(f->log), 1);
	load_equal(f, &model);
	/* the base: header, generation, ..., end line */
	text = file_read(f->base, &len);
	assert_memory_equal(text, "# shelf-broker members v2\ngeneration 1\nnode ", 44);
	assert_non_null(strstr(text, "\nslice hot "));
	assert_true(len > 13 && memcmp(text + len - 13, "end ", 4) == 0);
	free(text);
	text = file_read(f->log, &len);
	assert_non_null(strstr(text, " 0 journal 1\n"));
	free(text);
	/* and appending goes on in the new generation */
	{
		struct brk_change c = ch_state(0, OVL_MSG_STATE_OUT);

		append(l, &c, 1);
		model_apply(&model, &c, 1);
	}
	brk_members_log_close(&l);
	load_equal(f, &model);
	/* brk_state_members_save is a compaction too */
	assert_int_equal(brk_state_members_save(f->dir, &model, err, sizeof(err)), 0);
	assert_int_equal(lines_of(f->log), 1);
	text = file_read(f->base, &len);
	assert_non_null(strstr(text, "\ngeneration 2\n"));
	free(text);
	load_equal(f, &model);
	brk_membership_release(&model);
}

/*
 * A crash at any step of a compaction, as the files it leaves: before the
 * base is renamed (old base, old journal, a temporary file beside them);
 * after it (new base, old journal: stale, never applied again); after the
 * journal (new both). And a base older than its journal is refused.
 */
static void test_compaction_crash(void **state)
{
	struct fx *f = *state;
	struct brk_membership model, got;
	struct brk_members_log *l = NULL;
	char err[512], b0[128], j0[128], b1[128], j1[128], tmp[160];
	struct brk_change more = ch_state(2, OVL_MSG_STATE_UP);
	uint64_t gen = 0;

	three_batches(f, &model);
	/* records that must never apply twice: a removal and its record */
	{
		struct brk_change c[] = { ch_left("hot", 1, 5, OVL_MSG_LEFT_REVOKED),
					  ch_slice(BRK_CHANGE_REMOVE, "hot", 1), ch_epoch("hot", 5) };

		l = open_log(f, &got);
		brk_membership_release(&got);
		append(l, c, 3);
		model_apply(&model, c, 3);
		brk_members_log_close(&l);
	}
	/* a compaction to the previous generation first, so that both files exist */
	assert_int_equal(brk_state_members_save(f->dir, &model, err, sizeof(err)), 0);
	{
		struct brk_change c[] = { ch_node(f, 3, 0), ch_slice(BRK_CHANGE_MEMBER, "hot", 3),
					  ch_left("hot", 2, 6, OVL_MSG_LEFT_EXPIRED),
					  ch_slice(BRK_CHANGE_REMOVE, "hot", 2), ch_epoch("hot", 6) };

		l = open_log(f, &got);
		brk_membership_release(&got);
		append(l, c, 5);
		model_apply(&model, c, 5);
	}
	snprintf(b0, sizeof(b0), "%s/b0", f->dir);
	snprintf(j0, sizeof(j0), "%s/j0", f->dir);
	snprintf(b1, sizeof(b1), "%s/b1", f->dir);
	snprintf(j1, sizeof(j1), "%s/j1", f->dir);
	file_copy(f->base, b0);
	file_copy(f->log, j0);
	assert_int_equal(brk_members_log_compact(l, &model, err, sizeof(err)), 0);
	brk_members_log_sizes(l, NULL, NULL, &gen);
	assert_int_equal(gen, 2);
	brk_members_log_close(&l);
	file_copy(f->base, b1);
	file_copy(f->log, j1);

	/* before step 1's rename: the old files and a temporary one beside them */
	file_copy(b0, f->base);
	file_copy(j0, f->log);
	snprintf(tmp, sizeof(tmp), "%s.tmp.Ab12Cd", f->base);
	file_copy(b1, tmp);
	file_append(tmp, "node cut", 8);
	load_equal(f, &model);
	unlink(tmp);

	/* between the steps: the new base, the old journal (stale) */
	file_copy(b1, f->base);
	file_copy(j0, f->log);
	load_equal(f, &model);
	/* a stale journal is not read past its first record: damage in it
	 * does not matter (its records are all in the base) */
	flip(f->log, 3, 20);
	load_equal(f, &model);
	/* opening replaces the stale journal; appending then counts */
	l = open_log(f, &got);
	membership_equal(&got, &model);
	brk_membership_release(&got);
	assert_int_equal(lines_of(f->log), 1);
	append(l, &more, 1);
	brk_members_log_close(&l);
	model_apply(&model, &more, 1);
	load_equal(f, &model);

	/* after step 2 and its rename: the new files */
	file_copy(b1, f->base);
	file_copy(j1, f->log);
	l = open_log(f, &got);
	brk_membership_release(&got);
	append(l, &more, 1);
	brk_members_log_close(&l);
	load_equal(f, &model);

	/* a base older than its journal (restored from a backup): refused */
	file_copy(b0, f->base);
	file_copy(j1, f->log);
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "base is of generation 1"));
	assert_non_null(strstr(err, "older than its journal"));
	/* so is a missing base with a journal of a later generation */
	unlink(f->base);
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	brk_membership_release(&model);
}

/* A damaged or cut base is refused; its end line checks every byte. */
static void test_base_damage(void **state)
{
	struct fx *f = *state;
	struct brk_membership model;
	char err[512], want[160];
	size_t len;
	char *text = NULL;

	three_batches(f, &model);
	assert_int_equal(brk_state_members_save(f->dir, &model, err, sizeof(err)), 0);
	load_equal(f, &model);
	text = file_read(f->base, &len);
	/* a digit of the node's certificate (the last word of line 3): the line
	 * still parses, only the end line can tell */
	{
		size_t at = line_at(text, 3), end = line_at(text, 4) - 1;

		assert_memory_equal(text + at, "node ", 5);
		flip(f->base, 3, end - at - 4);
	}
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	snprintf(want, sizeof(want), "'%s' line %u (the end line): the checksum", f->base,
		 lines_of(f->base));
	assert_non_null(strstr(err, want));
	/* cut short: the end line is missing */
	file_write(f->base, text, line_at(text, lines_of(f->base)));
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "cut short"));
	/* anything after the end line */
	file_write(f->base, text, len);
	file_append(f->base, "member zz\n", 10);
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "follows the end line"));
	free(text);
	brk_membership_release(&model);
}

/* A state directory of the previous version (members v1, no journal) loads;
 * the journal continues it, and a compaction rewrites it as v2. */
static void test_v1_base(void **state)
{
	struct fx *f = *state;
	struct brk_membership model, got;
	struct brk_members_log *l = NULL;
	struct brk_change n1 = ch_node(f, 1, 0), n2 = ch_node(f, 2, 0);
	char v1[4096], id1[65], id2[65], id3[65], addr[33], key[65], cert[2 * CERT_MAX + 1];
	char err[256];
	uint8_t id[OVL_ID_BYTES], a[OVL_MSG_ADDR_BYTES];
	size_t len = 0;
	char *text = NULL;
	uint64_t gen = 7;

	/* the previous version wrote exactly this (brk_state_members_save of v1) */
	memset(&model, 0, sizeof(model));
	{
		struct brk_change c[] = { n1, n2, ch_slice(BRK_CHANGE_MEMBER, "hot", 1),
					  ch_slice(BRK_CHANGE_MEMBER, "hot", 2), ch_epoch("hot", 4),
					  ch_slice(BRK_CHANGE_MEMBER, "cold", 2), ch_epoch("cold", 2),
					  ch_left("cold", 3, 2, OVL_MSG_LEFT_DELETED) };

		model_apply(&model, c, 8);
	}
	len += (size_t)snprintf(v1 + len, sizeof(v1) - len, "# shelf-broker members v1\n");
	for (int i = 0; i < 2; i++) {
		const struct brk_node_rec *r = i ? &n2.node : &n1.node;
		char hex[6][64];
		const char *s[6] = { r->board, r->version, r->domain.site, r->domain.chassis,
				     r->domain.slot, r->group };

		for (int k = 0; k < 6; k++) {
			if (s[k][0])
				ovl_hex_encode(s[k], strlen(s[k]), hex[k]);
			else
				snprintf(hex[k], sizeof(hex[k]), "-");
		}
		ovl_hex_encode(r->id, OVL_ID_BYTES, id1);
		ovl_hex_encode(r->curve_key, OVL_KEY_BYTES, key);
		ovl_hex_encode(r->cert, r->cert_len, cert);
		len += (size_t)snprintf(v1 + len, sizeof(v1) - len,
					"node %s %s %u %s %llu %llu %s %s %s %s %s %s %s\n", id1, key,
					r->port, r->state == OVL_MSG_STATE_UP ? "up" :
					r->state == OVL_MSG_STATE_OUT ? "out" : "down",
					(unsigned long long)r->capacity, (unsigned long long)r->serial,
					hex[0], hex[1], hex[2], hex[3], hex[4], hex[5], cert);
	}
	id_of(1, id);
	ovl_hex_encode(id, OVL_ID_BYTES, id1);
	id_of(2, id);
	ovl_hex_encode(id, OVL_ID_BYTES, id2);
	id_of(3, id);
	ovl_hex_encode(id, OVL_ID_BYTES, id3);
	len += (size_t)snprintf(v1 + len, sizeof(v1) - len, "slice hot 4\n");
	for (int i = 1; i <= 2; i++) {
		struct brk_change c = ch_slice(BRK_CHANGE_MEMBER, "hot", (unsigned)i);

		memcpy(a, c.member.addr, sizeof(a));
		ovl_hex_encode(a, sizeof(a), addr);
		len += (size_t)snprintf(v1 + len, sizeof(v1) - len, "member %s %s\n",
					i == 1 ? id1 : id2, addr);
	}
	{
		struct brk_change c = ch_slice(BRK_CHANGE_MEMBER, "cold", 2);

		ovl_hex_encode(c.member.addr, OVL_MSG_ADDR_BYTES, addr);
		len += (size_t)snprintf(v1 + len, sizeof(v1) - len,
					"slice cold 2\nmember %s %s\nleft %s 2 deleted\n", id2, addr,
					id3);
	}
	assert_true(len < sizeof(v1));
	file_write(f->base, v1, len);
	load_equal(f, &model);
	/* the journal starts at generation 0 beside it */
	l = open_log(f, &got);
	membership_equal(&got, &model);
	brk_membership_release(&got);
	brk_members_log_sizes(l, NULL, NULL, &gen);
	assert_int_equal(gen, 0);
	{
		struct brk_change c[] = { ch_state(1, OVL_MSG_STATE_DOWN), ch_epoch("hot", 5) };

		append(l, c, 2);
		model_apply(&model, c, 2);
	}
	load_equal(f, &model);
	/* the v1 file is untouched until a compaction rewrites it */
	text = file_read(f->base, &len);
	assert_memory_equal(text, "# shelf-broker members v1\n", 26);
	free(text);
	assert_int_equal(brk_members_log_compact(l, &model, err, sizeof(err)), 0);
	brk_members_log_close(&l);
	text = file_read(f->base, &len);
	assert_memory_equal(text, "# shelf-broker members v2\ngeneration 1\n", 39);
	free(text);
	load_equal(f, &model);
	/* a bad v1 line is refused as before, naming file and line */
	file_write(f->base, v1, strlen(v1));
	file_append(f->base, "member zz\n", 10);
	unlink(f->log);
	assert_int_equal(load_err(f, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "line 10 is not a valid membership entry"));
	brk_membership_release(&model);
}

/*
 * A model check: random batches of valid changes appended, with random
 * compactions and reopenings; every load equals the model (the same changes
 * applied in memory). Seeds are printed; SEED=n replays one.
 */
static void test_model(void **state)
{
	struct fx *f = *state;
	const char *seed_env = getenv("SEED");
	uint64_t seed0 = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL);
	unsigned seeds = seed_env ? 1 : getenv("LONG") ? 40 : 6;
	static const char *const names[] = { "hot", "cold", "warm" };

	for (unsigned si = 0; si < seeds; si++) {
		uint64_t seed = seed0 + si;
		struct brk_membership model, got;
		struct brk_members_log *l = NULL;
		unsigned version = 0;
		char err[512];

		print_message("seed %" PRIu64 " (SEED=%" PRIu64 " replays it)\n", seed, seed);
		f->rng = seed * 2654435761u + 1;
		unlink(f->base);
		unlink(f->log);
		memset(&model, 0, sizeof(model));
		l = open_log(f, &got);
		brk_membership_release(&got);
		for (unsigned round = 0; round < 150; round++) {
			struct brk_change c[24];
			size_t n = 1 + rnd(f) % 24;

			for (size_t k = 0; k < n; k++) {
				unsigned i = (unsigned)(rnd(f) % POOL);
				const char *s = names[rnd(f) % 3];
				const struct brk_slice_members *sm = slice_find(&model, s);
				uint8_t id[OVL_ID_BYTES];

				id_of(i, id);
				switch (rnd(f) % 7) {
				case 0:
					c[k] = ch_node(f, i, ++version);
					break;
				case 1:
					c[k] = node_find(&model, id) ?
						       ch_state(i, (uint8_t)(1 + rnd(f) % 3)) :
						       ch_node(f, i, ++version);
					break;
				case 2:
					c[k] = ch_epoch(s, rnd(f) % 1000);
					break;
				case 3:
					c[k] = node_find(&model, id) ?
						       ch_slice(BRK_CHANGE_MEMBER, s, i) :
						       ch_node(f, i, ++version);
					break;
				case 4:
					if (sm && sm->n_members) {
						uint8_t *mid = sm->members[rnd(f) % sm->n_members].id;

						c[k] = ch_slice(BRK_CHANGE_REMOVE, s, 0);
						memcpy(c[k].member.id, mid, OVL_ID_BYTES);
					} else {
						c[k] = ch_epoch(s, rnd(f) % 1000);
					}
					break;
				case 5:
					c[k] = ch_left(s, i, rnd(f) % 1000,
						       (enum ovl_msg_left_reason)(1 + rnd(f) % 3));
					break;
				default:
					c[k] = rnd(f) % 8 == 0 ? ch_slice(BRK_CHANGE_DROP, s, 0) :
								 ch_epoch(s, rnd(f) % 1000);
				}
				/* each change applies to the model as it stands */
				assert_int_equal(brk_membership_apply(&model, &c[k]), 0);
			}
			append(l, c, n);
			if (rnd(f) % 16 == 0)
				assert_int_equal(brk_members_log_compact(l, &model, err, sizeof(err)),
						 0);
			if (rnd(f) % 8 == 0) {
				brk_members_log_close(&l);
				l = open_log(f, &got);
				membership_equal(&got, &model);
				brk_membership_release(&got);
			}
		}
		brk_members_log_close(&l);
		load_equal(f, &model);
		brk_membership_release(&model);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_base_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_v1_base, setup, teardown),
		cmocka_unit_test_setup_teardown(test_model, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
