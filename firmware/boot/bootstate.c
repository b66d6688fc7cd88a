/* boot_state: the boot state file and the chooser's decision (bootstate.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "overlay.h"
#include "boot/bootstate.h"

static void say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int boot_slot_index(char slot)
{
	if (slot == 'a')
		return 0;
	if (slot == 'b')
		return 1;
	return -EINVAL;
}

/* one decimal 0..max, no sign, no leading zeros but "0"; n chars at s */
static bool dec_parse(const char *s, size_t n, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 10 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

/* The grammar of ovl_fleet_version_parse(), checked here on its own so that
 * shelf-boot links none of what ovl_fleet needs (test_bootstate holds the
 * two to the same answers). */
bool boot_version_valid(const char *s)
{
	const char *p = s;
	unsigned long v;

	if (!s || strlen(s) >= BOOT_VERSION_MAX_CHARS)
		return false;
	for (int part = 0; part < 3; part++) {
		size_t n = strspn(p, "0123456789");

		if (!dec_parse(p, n, 65535, &v))
			return false;
		p += n;
		if (part < 2) {
			if (*p != '.')
				return false;
			p++;
		}
	}
	return *p == '\0';
}

/* the parser's cursor: one line at a time */
struct cur {
	const char *buf, *name;
	size_t len, off;
	unsigned line;                 /* number of the line last taken */
	const char *k, *v;             /* key and value of the line taken */
	size_t klen, vlen;
};

/* Take the next line; 1 taken, 0 at the end, -EINVAL malformed. */
static int next_line(struct cur *c, char *err, size_t errlen)
{
	const char *nl, *sp;
	size_t n;

	if (c->off >= c->len)
		return 0;
	c->line++;
	nl = memchr(c->buf + c->off, '\n', c->len - c->off);
	if (!nl) {
		say(err, errlen, "boot state '%s' line %u: no newline at the end of the file", c->name, c->line);
		return -EINVAL;
	}
	n = (size_t)(nl - (c->buf + c->off));
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)c->buf[c->off + i];

		if (ch < 0x20 || ch == 0x7f) {
			say(err, errlen, "boot state '%s' line %u: control byte 0x%02x", c->name, c->line, ch);
			return -EINVAL;
		}
	}
	sp = memchr(c->buf + c->off, ' ', n);
	if (!sp || sp == c->buf + c->off || (size_t)(sp - (c->buf + c->off)) + 1 >= n) {
		say(err, errlen, "boot state '%s' line %u: not 'key value'", c->name, c->line);
		return -EINVAL;
	}
	c->k = c->buf + c->off;
	c->klen = (size_t)(sp - c->k);
	c->v = sp + 1;
	c->vlen = n - c->klen - 1;
	c->off += n + 1;
	return 1;
}

static bool key_is(const struct cur *c, const char *k)
{
	return c->klen == strlen(k) && memcmp(c->k, k, c->klen) == 0;
}

/* a line that must be `want`; a different key or no line: -EINVAL */
static int expect(struct cur *c, const char *want, char *err, size_t errlen)
{
	int r = next_line(c, err, errlen);

	if (r < 0)
		return r;
	if (r == 0) {
		say(err, errlen, "boot state '%s': ends before '%s'", c->name, want);
		return -EINVAL;
	}
	if (!key_is(c, want)) {
		say(err, errlen, "boot state '%s' line %u: unknown or misplaced key '%.*s' (expected '%s')",
		    c->name, c->line, (int)(c->klen > 40 ? 40 : c->klen), c->k, want);
		return -EINVAL;
	}
	return 0;
}

static int bad_value(const struct cur *c, const char *what, char *err, size_t errlen)
{
	say(err, errlen, "boot state '%s' line %u: bad value '%.*s' for '%.*s' (%s)", c->name, c->line,
	    (int)(c->vlen > 40 ? 40 : c->vlen), c->v, (int)c->klen, c->k, what);
	return -EINVAL;
}

/* a slot letter value; allow_none also takes '-' (0) */
static int slot_value(const struct cur *c, bool allow_none, char *out, char *err, size_t errlen)
{
	if (c->vlen == 1 && (c->v[0] == 'a' || c->v[0] == 'b')) {
		*out = c->v[0];
		return 0;
	}
	if (allow_none && c->vlen == 1 && c->v[0] == '-') {
		*out = 0;
		return 0;
	}
	return bad_value(c, allow_none ? "a, b or -" : "a or b", err, errlen);
}

static int slot_lines(struct cur *c, struct boot_slot *s, char letter, char *err, size_t errlen)
{
	char key[16];
	unsigned long v;
	int r;

	s->present = true;
	if (c->vlen >= sizeof(s->version))
		return bad_value(c, "not a version MAJOR.MINOR.PATCH", err, errlen);
	memcpy(s->version, c->v, c->vlen);
	s->version[c->vlen] = '\0';
	if (!boot_version_valid(s->version))
		return bad_value(c, "not a version MAJOR.MINOR.PATCH", err, errlen);
	snprintf(key, sizeof(key), "%c.attempts", letter);
	r = expect(c, key, err, errlen);
	if (r < 0)
		return r;
	if (!dec_parse(c->v, c->vlen, BOOT_ATTEMPTS_MAX, &v))
		return bad_value(c, "a number 0..100", err, errlen);
	s->attempts = (unsigned)v;
	snprintf(key, sizeof(key), "%c.good", letter);
	r = expect(c, key, err, errlen);
	if (r < 0)
		return r;
	if (c->vlen != 1 || (c->v[0] != '0' && c->v[0] != '1'))
		return bad_value(c, "0 or 1", err, errlen);
	s->good = c->v[0] == '1';
	return 0;
}

int boot_state_parse(struct boot_state *st, const char *buf, size_t len, const char *name,
		     char *err, size_t errlen)
{
	struct cur c = { .buf = buf, .len = len, .name = name ? name : "(buffer)" };
	unsigned long v;
	int r;

	memset(st, 0, sizeof(*st));
	if (len > BOOT_STATE_MAX_BYTES) {
		say(err, errlen, "boot state '%s': %zu bytes, more than %d", c.name, len, BOOT_STATE_MAX_BYTES);
		return -EINVAL;
	}
	if (len == 0) {
		say(err, errlen, "boot state '%s': empty", c.name);
		return -EINVAL;
	}
	r = expect(&c, "shelf-boot", err, errlen);
	if (r < 0)
		return r;
	if (!dec_parse(c.v, c.vlen, 1000, &v) || v != 1) {
		say(err, errlen, "boot state '%s' line 1: format '%.*s' is not 1", c.name,
		    (int)(c.vlen > 20 ? 20 : c.vlen), c.v);
		return -EINVAL;
	}
	r = expect(&c, "primary", err, errlen);
	if (r < 0)
		return r;
	r = slot_value(&c, false, &st->primary, err, errlen);
	if (r < 0)
		return r;
	r = next_line(&c, err, errlen);
	if (r < 0)
		return r;
	if (r > 0 && key_is(&c, "a.version")) {
		r = slot_lines(&c, &st->s[0], 'a', err, errlen);
		if (r < 0)
			return r;
		r = next_line(&c, err, errlen);
		if (r < 0)
			return r;
	}
	if (r > 0 && key_is(&c, "b.version")) {
		r = slot_lines(&c, &st->s[1], 'b', err, errlen);
		if (r < 0)
			return r;
		r = next_line(&c, err, errlen);
		if (r < 0)
			return r;
	}
	if (r == 0) {
		say(err, errlen, "boot state '%s': ends before 'last'", c.name);
		return -EINVAL;
	}
	if (!key_is(&c, "last")) {
		say(err, errlen, "boot state '%s' line %u: unknown or misplaced key '%.*s'", c.name, c.line,
		    (int)(c.klen > 40 ? 40 : c.klen), c.k);
		return -EINVAL;
	}
	r = slot_value(&c, true, &st->last, err, errlen);
	if (r < 0)
		return r;
	r = next_line(&c, err, errlen);
	if (r < 0)
		return r;
	if (r > 0) {
		if (!key_is(&c, "fallback")) {
			say(err, errlen, "boot state '%s' line %u: unknown or misplaced key '%.*s'", c.name,
			    c.line, (int)(c.klen > 40 ? 40 : c.klen), c.k);
			return -EINVAL;
		}
		if (c.vlen >= sizeof(st->fallback))
			return bad_value(&c, "longer than 255 characters", err, errlen);
		memcpy(st->fallback, c.v, c.vlen);
		st->fallback[c.vlen] = '\0';
		r = next_line(&c, err, errlen);
		if (r < 0)
			return r;
		if (r > 0) {
			say(err, errlen, "boot state '%s' line %u: unexpected line after 'fallback'", c.name, c.line);
			return -EINVAL;
		}
	}
	if (!st->s[0].present && !st->s[1].present) {
		say(err, errlen, "boot state '%s': names no slot", c.name);
		return -EINVAL;
	}
	if (!st->s[boot_slot_index(st->primary)].present) {
		say(err, errlen, "boot state '%s': primary slot %c is not in the state", c.name, st->primary);
		return -EINVAL;
	}
	if (st->last && !st->s[boot_slot_index(st->last)].present) {
		say(err, errlen, "boot state '%s': last slot %c is not in the state", c.name, st->last);
		return -EINVAL;
	}
	return 0;
}

static bool text_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

int boot_state_format(const struct boot_state *st, char *buf, size_t cap, char *err, size_t errlen)
{
	size_t off = 0;
	int n;

	if (boot_slot_index(st->primary) < 0 || !st->s[boot_slot_index(st->primary)].present) {
		say(err, errlen, "boot state: primary '%c' is not a present slot", st->primary ? st->primary : '?');
		return -EINVAL;
	}
	if (st->last && (boot_slot_index(st->last) < 0 || !st->s[boot_slot_index(st->last)].present)) {
		say(err, errlen, "boot state: last '%c' is not a present slot", st->last);
		return -EINVAL;
	}
	if (!text_ok(st->fallback) || strnlen(st->fallback, sizeof(st->fallback)) >= sizeof(st->fallback)) {
		say(err, errlen, "boot state: fallback reason has a control character or is too long");
		return -EINVAL;
	}
	n = snprintf(buf, cap, "shelf-boot 1\nprimary %c\n", st->primary);
	if (n < 0 || (size_t)n >= cap)
		goto big;
	off = (size_t)n;
	for (int i = 0; i < 2; i++) {
		const struct boot_slot *s = &st->s[i];

		if (!s->present)
			continue;
		if (!boot_version_valid(s->version) || s->attempts > BOOT_ATTEMPTS_MAX) {
			say(err, errlen, "boot state: slot %c has a bad version or attempts", 'a' + i);
			return -EINVAL;
		}
		n = snprintf(buf + off, cap - off, "%c.version %s\n%c.attempts %u\n%c.good %d\n", 'a' + i,
			     s->version, 'a' + i, s->attempts, 'a' + i, s->good ? 1 : 0);
		if (n < 0 || (size_t)n >= cap - off)
			goto big;
		off += (size_t)n;
	}
	n = snprintf(buf + off, cap - off, "last %c\n", st->last ? st->last : '-');
	if (n < 0 || (size_t)n >= cap - off)
		goto big;
	off += (size_t)n;
	if (st->fallback[0]) {
		n = snprintf(buf + off, cap - off, "fallback %s\n", st->fallback);
		if (n < 0 || (size_t)n >= cap - off)
			goto big;
		off += (size_t)n;
	}
	return (int)off;
big:
	say(err, errlen, "boot state: more than %zu bytes", cap);
	return -E2BIG;
}

static void path_of(char *out, size_t cap, const char *dir, const char *leaf)
{
	snprintf(out, cap, "%s/boot/%s", dir, leaf);
}

int boot_state_load(const char *state_dir, struct boot_state *st, char *err, size_t errlen)
{
	char path[4096];
	char buf[BOOT_STATE_MAX_BYTES + 1];
	size_t len = 0;
	int fd = -1, r = 0;

	memset(st, 0, sizeof(*st));
	path_of(path, sizeof(path), state_dir, "state");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		say(err, errlen, "cannot open boot state '%s': %s", path, strerror(-r));
		goto out;
	}
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			say(err, errlen, "cannot read boot state '%s': %s", path, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	r = boot_state_parse(st, buf, len, path, err, errlen);
out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* open and flock state_dir/boot/lock (creating boot/); the fd or -errno */
static int lock_take(const char *state_dir, char *err, size_t errlen)
{
	char path[4096];
	int fd, r;

	snprintf(path, sizeof(path), "%s/boot", state_dir);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		say(err, errlen, "cannot create '%s': %s", path, strerror(-r));
		return r;
	}
	path_of(path, sizeof(path), state_dir, "lock");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		say(err, errlen, "cannot open '%s': %s", path, strerror(-r));
		return r;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		r = -errno;
		say(err, errlen, "cannot lock '%s': %s", path, strerror(-r));
		close(fd);
		return r;
	}
	return fd;
}

static int save_locked(const char *state_dir, const struct boot_state *st, char *err, size_t errlen)
{
	char path[4096];
	char buf[BOOT_STATE_MAX_BYTES + 1];
	int n = boot_state_format(st, buf, sizeof(buf), err, errlen);

	if (n < 0)
		return n;
	path_of(path, sizeof(path), state_dir, "state");
	return ovl_file_write_atomic(path, buf, (size_t)n, 0644, err, errlen);
}

int boot_state_save_err(const char *state_dir, const struct boot_state *st, char *err, size_t errlen)
{
	int fd = lock_take(state_dir, err, errlen);
	int r;

	if (fd < 0)
		return fd;
	r = save_locked(state_dir, st, err, errlen);
	close(fd);
	return r;
}

int boot_state_save(const char *state_dir, const struct boot_state *st)
{
	char err[256];

	return boot_state_save_err(state_dir, st, err, sizeof(err));
}

int boot_state_mark_good(const char *state_dir, char slot)
{
	struct boot_state st;
	char err[512];
	int i = boot_slot_index(slot), fd = -1, r;

	if (i < 0)
		return -EINVAL;
	fd = lock_take(state_dir, err, sizeof(err));
	if (fd < 0)
		return fd;
	r = boot_state_load(state_dir, &st, err, sizeof(err));
	if (r < 0)
		goto out;
	if (!st.s[i].present) {
		r = -ENOENT;
		goto out;
	}
	st.s[i].good = true;
	st.s[i].attempts = BOOT_ATTEMPTS_DEFAULT;
	r = save_locked(state_dir, &st, err, sizeof(err));
out:
	close(fd);
	return r;
}

int boot_state_set_try(const char *state_dir, char slot, const char *version)
{
	struct boot_state st;
	char err[512];
	int i = boot_slot_index(slot), fd = -1, r;

	if (i < 0 || !boot_version_valid(version))
		return -EINVAL;
	fd = lock_take(state_dir, err, sizeof(err));
	if (fd < 0)
		return fd;
	r = boot_state_load(state_dir, &st, err, sizeof(err));
	if (r < 0)
		goto out;
	st.s[i].present = true;
	snprintf(st.s[i].version, sizeof(st.s[i].version), "%s", version);
	st.s[i].good = false;
	st.s[i].attempts = BOOT_ATTEMPTS_DEFAULT;
	st.primary = slot;
	st.fallback[0] = '\0';
	r = save_locked(state_dir, &st, err, sizeof(err));
out:
	close(fd);
	return r;
}

/* why slot i cannot be started, or NULL when it can */
static const char *unbootable(const struct boot_state *st, const bool runnable[2], int i)
{
	if (!st->s[i].present)
		return "is not in the boot state";
	if (!runnable[i])
		return "has no runnable bin/shelf-node";
	if (!st->s[i].good && st->s[i].attempts == 0)
		return "is not good and has no attempts left";
	return NULL;
}

int boot_choose(struct boot_state *st, const bool runnable[2], const char *last_fail,
		char *slot, char *why, size_t whylen)
{
	int p = boot_slot_index(st->primary), o;
	const char *pw, *ow;
	char reason[BOOT_FALLBACK_MAX_CHARS];

	if (why && whylen)
		why[0] = '\0';
	if (p < 0)
		p = 0;
	o = 1 - p;
	pw = unbootable(st, runnable, p);
	if (!pw) {
		if (!st->s[p].good)
			st->s[p].attempts--;
		st->primary = (char)('a' + p);
		st->last = (char)('a' + p);
		*slot = (char)('a' + p);
		return 0;
	}
	ow = unbootable(st, runnable, o);
	if (last_fail && last_fail[0])
		snprintf(reason, sizeof(reason), "slot %c%s%s %s (last: %s)", 'a' + p,
			 st->s[p].present ? " " : "", st->s[p].present ? st->s[p].version : "", pw, last_fail);
	else
		snprintf(reason, sizeof(reason), "slot %c%s%s %s", 'a' + p,
			 st->s[p].present ? " " : "", st->s[p].present ? st->s[p].version : "", pw);
	if (ow) {
		say(why, whylen, "no bootable slot: %s; slot %c %s", reason, 'a' + o, ow);
		return -ENOENT;
	}
	if (!st->s[o].good)
		st->s[o].attempts--;
	snprintf(st->fallback, sizeof(st->fallback), "%s", reason);
	say(why, whylen, "%s", reason);
	st->primary = (char)('a' + o);
	st->last = (char)('a' + o);
	*slot = (char)('a' + o);
	return 0;
}

char boot_state_salvage(const char *buf, size_t len, const bool runnable[2])
{
	static const char *const marks[2] = { "a.good 1\n", "b.good 1\n" };
	size_t mlen = strlen(marks[0]);

	for (int i = 0; i < 2; i++) {
		if (!runnable[i])
			continue;
		for (size_t off = 0; off + mlen <= len; off++)
			if ((off == 0 || buf[off - 1] == '\n') && memcmp(buf + off, marks[i], mlen) == 0)
				return (char)('a' + i);
	}
	if (runnable[0])
		return 'a';
	if (runnable[1])
		return 'b';
	return 0;
}
