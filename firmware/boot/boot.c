/*
 * shelf-boot: the boot chooser of the sim board's A/B slots (design: the
 * node's slots under its state directory, docs/FORMAT.md "Slots and the
 * boot state").
 *
 *   shelf-boot --state-dir D [--seed DIR] [--seed-boards BDIR]
 *              [--deadline 120s] [--node-pid-file FILE] -- NODE_ARGS...
 *
 * It picks a slot (boot_choose()), counts the attempt of a slot not yet
 * marked good, saves the state and starts D/slots/X/bin/shelf-node
 * NODE_ARGS with SHELF_SLOT, SHELF_SLOT_VERSION, SHELF_BOARDS and
 * SHELF_BOOT_STATE set. The node's exit decides what follows: 0 = a clean
 * stop (shelf-boot exits 0), 75 = restart at once (into the new primary),
 * anything else = start again after 1 s. A slot that is not good and has
 * not marked itself good within --deadline is stopped (SIGTERM, SIGKILL 5 s
 * later) and that counts as a failed attempt. SIGTERM/SIGINT are passed on
 * to the node; shelf-boot exits when it does, with its status.
 *
 * Its own exit codes: 0 clean stop, 1 nothing bootable or a fatal error,
 * 2 usage; after a forwarded stop, the node's (128+N for signal N).
 * Small on purpose: one process, no threads, libc only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
#include "boot/bootstate.h"

#ifndef SHELF_VERSION
#error "SHELF_VERSION (the Makefile's VERSION) must be defined"
#endif

#define BOOT_RETRY_MS 1000          /* after a crash or a failing exit */
#define BOOT_KILL_GRACE_MS 5000     /* SIGTERM, then SIGKILL after this */
#define BOOT_POLL_MS 250            /* how often a running not-good slot is looked at */
#define BOOT_EXIT_RESTART 75        /* EX_TEMPFAIL: "restart me now" */
#define BOOT_DEADLINE_DEFAULT_MS 120000
#define BOOT_DIR_MAX 1024           /* longest state directory path */

struct boot {
	char dir[BOOT_DIR_MAX];       /* the state directory, absolute */
	const char *seed;             /* --seed DIR or NULL */
	const char *seed_boards;      /* --seed-boards DIR or NULL */
	const char *pid_file;         /* --node-pid-file or NULL */
	int64_t deadline_ms;
	char **node_argv;             /* NODE_ARGS, NULL-terminated (argv[0] set per start) */
	int node_argc;
	char last_fail[2][160];       /* how each slot's last attempt ended */
	sigset_t sigs;                /* the signals waited for */
	sigset_t orig;                /* the mask the node gets back */
};

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;

	fputs("shelf-boot: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shelf-boot --state-dir D [--seed DIR] [--seed-boards BDIR] [--deadline 120s]\n"
		"                  [--node-pid-file FILE] -- NODE_ARGS...\n"
		"Starts the node of slot a or b under D/slots (the A/B boot chooser).\n"
		"  --state-dir D       the node's state directory (D/boot/state, D/slots/)\n"
		"  --seed DIR          on first start, slot a = DIR/shelf-node (or DIR/bin/shelf-node)\n"
		"                      and the board profiles (DIR/boards, DIR/../boards or\n"
		"                      DIR/../share/shelf/boards); also refreshes a seeded slot a that\n"
		"                      no update has replaced when the seed's shelf-node changed\n"
		"  --seed-boards BDIR  the board profiles to seed from\n"
		"  --deadline DUR      a slot not marked good is stopped after DUR (default 120s)\n"
		"  --node-pid-file F   write the running node's pid to F\n"
		"Node exit 0: stop; 75: restart now; other: restart after 1 s.\n"
		"Exit: 0 clean stop, 1 nothing bootable or fatal, 2 usage.\n");
}

/* ---- files ---------------------------------------------------------------- */

static int copy_file(const char *src, const char *dst, mode_t mode, char *err, size_t errlen)
{
	char buf[65536];
	int in = -1, out = -1, r = 0;

	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open '%.400s': %s", src, strerror(-r));
		goto out;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (out < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create '%.400s': %s", dst, strerror(-r));
		goto out;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot read '%.400s': %s", src, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		r = ovl_file_write_full(out, buf, (size_t)n);
		if (r < 0) {
			snprintf(err, errlen, "cannot write '%.400s': %s", dst, strerror(-r));
			goto out;
		}
	}
	if (fchmod(out, mode) < 0 || fsync(out) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot sync '%.400s': %s", dst, strerror(-r));
	}
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return r;
}

static int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* copy the tree src into dst (created), regular files and folders only */
static int copy_tree(const char *src, const char *dst, int depth, char *err, size_t errlen)
{
	DIR *d = NULL;
	struct dirent *e;
	int r = 0;

	if (depth > 8) {
		snprintf(err, errlen, "'%.400s': folders nested too deep", src);
		return -ELOOP;
	}
	if (mkdir(dst, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot create '%.400s': %s", dst, strerror(-r));
		return r;
	}
	d = opendir(src);
	if (!d) {
		r = -errno;
		snprintf(err, errlen, "cannot open '%.400s': %s", src, strerror(-r));
		return r;
	}
	while ((e = readdir(d))) {
		char s[PATH_MAX], t[PATH_MAX];
		struct stat sb;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (snprintf(s, sizeof(s), "%s/%s", src, e->d_name) >= (int)sizeof(s) ||
		    snprintf(t, sizeof(t), "%s/%s", dst, e->d_name) >= (int)sizeof(t)) {
			snprintf(err, errlen, "'%s/%s': path too long", src, e->d_name);
			r = -ENAMETOOLONG;
			goto out;
		}
		if (stat(s, &sb) < 0)
			continue;
		if (S_ISDIR(sb.st_mode))
			r = copy_tree(s, t, depth + 1, err, errlen);
		else if (S_ISREG(sb.st_mode))
			r = copy_file(s, t, sb.st_mode & 0777, err, errlen);
		if (r < 0)
			goto out;
	}
	r = sync_dir(dst);
out:
	closedir(d);
	return r;
}

/* rm -r path (no error when it does not exist) */
static int remove_tree(const char *path, int depth)
{
	struct stat sb;
	DIR *d;
	struct dirent *e;
	int r = 0;

	if (lstat(path, &sb) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(sb.st_mode))
		return unlink(path) < 0 ? -errno : 0;
	if (depth > 16)
		return -ELOOP;
	d = opendir(path);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char p[PATH_MAX];

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", path, e->d_name) >= (int)sizeof(p)) {
			r = -ENAMETOOLONG;
			break;
		}
		r = remove_tree(p, depth + 1);
		if (r < 0)
			break;
	}
	closedir(d);
	if (r == 0 && rmdir(path) < 0)
		r = -errno;
	return r;
}

static bool is_dir(const char *p)
{
	struct stat sb;

	return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool slot_runnable(const struct boot *b, int i)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/slots/%c/bin/shelf-node", b->dir, 'a' + i);
	return access(p, X_OK) == 0;
}

/* read a slot's VERSION file into v (valid version) or "" */
static void slot_version(const char *slotdir, char *v, size_t cap)
{
	char p[PATH_MAX], buf[64];
	FILE *f;

	v[0] = '\0';
	snprintf(p, sizeof(p), "%s/VERSION", slotdir);
	f = fopen(p, "re");
	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = '\0';
		if (boot_version_valid(buf) && strlen(buf) < cap)
			memcpy(v, buf, strlen(buf) + 1);
	}
	fclose(f);
}

/* the seed's shelf-node and board profiles */
static int seed_paths(const struct boot *b, char *bin, char *boards, size_t cap)
{
	const char *cand[3] = { "%s/boards", "%s/../boards", "%s/../share/shelf/boards" };

	snprintf(bin, cap, "%s/bin/shelf-node", b->seed);
	if (access(bin, X_OK) < 0)
		snprintf(bin, cap, "%s/shelf-node", b->seed);
	if (access(bin, X_OK) < 0)
		return -ENOENT;
	boards[0] = '\0';
	if (b->seed_boards) {
		snprintf(boards, cap, "%s", b->seed_boards);
		return is_dir(boards) ? 0 : -ENOTDIR;
	}
	for (int i = 0; i < 3; i++) {
		snprintf(boards, cap, cand[i], b->seed);
		if (is_dir(boards))
			return 0;
	}
	boards[0] = '\0';
	return 0;
}

/* whether files a and b have the same bytes */
static bool same_file(const char *a, const char *b)
{
	char x[65536], y[65536];
	struct stat sa, sb;
	FILE *fa = NULL, *fb = NULL;
	bool same = false;

	if (stat(a, &sa) < 0 || stat(b, &sb) < 0 || sa.st_size != sb.st_size)
		return false;
	fa = fopen(a, "re");
	fb = fopen(b, "re");
	if (!fa || !fb)
		goto out;
	for (;;) {
		size_t n = fread(x, 1, sizeof(x), fa), m = fread(y, 1, sizeof(y), fb);

		if (n != m || memcmp(x, y, n) != 0)
			goto out;
		if (n == 0)
			break;
	}
	same = !ferror(fa) && !ferror(fb);
out:
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

/*
 * Build slot a from the seed in D/slots/a.new, then put it in place as
 * D/slots/a (renamed, or exchanged with an old a that is then removed): a
 * kill at any point leaves either the old a or the complete new one. The
 * seed's version in *version.
 */
static int seed_slot_a(const struct boot *b, char *version, size_t vcap, char *err, size_t errlen)
{
	char bin[PATH_MAX], boards[PATH_MAX], tmp[BOOT_DIR_MAX + 32], p[PATH_MAX], a[BOOT_DIR_MAX + 32];
	char vfile[64];
	int r;

	r = seed_paths(b, bin, boards, sizeof(bin));
	if (r == -ENOENT) {
		snprintf(err, errlen, "no runnable shelf-node in seed '%.400s' (looked for bin/shelf-node and shelf-node)", b->seed);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "seed boards '%.400s' is not a folder", boards);
		return r;
	}
	slot_version(b->seed, version, vcap);
	if (!version[0])
		snprintf(version, vcap, "%s", SHELF_VERSION);
	snprintf(p, sizeof(p), "%s/slots", b->dir);
	if (mkdir(p, 0755) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot create '%.400s': %s", p, strerror(-r));
		return r;
	}
	snprintf(tmp, sizeof(tmp), "%s/slots/a.new", b->dir);
	r = remove_tree(tmp, 0);
	if (r < 0) {
		snprintf(err, errlen, "cannot remove '%.400s': %s", tmp, strerror(-r));
		return r;
	}
	snprintf(p, sizeof(p), "%s/bin", tmp);
	if (mkdir(tmp, 0755) < 0 || mkdir(p, 0755) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create '%.400s': %s", p, strerror(-r));
		return r;
	}
	snprintf(p, sizeof(p), "%s/bin/shelf-node", tmp);
	r = copy_file(bin, p, 0755, err, errlen);
	if (r < 0)
		return r;
	if (boards[0]) {
		snprintf(p, sizeof(p), "%s/boards", tmp);
		r = copy_tree(boards, p, 0, err, errlen);
		if (r < 0)
			return r;
	}
	snprintf(vfile, sizeof(vfile), "%s\n", version);
	snprintf(p, sizeof(p), "%s/VERSION", tmp);
	r = ovl_file_write_atomic(p, vfile, strlen(vfile), 0644, err, errlen);
	if (r < 0)
		return r;
	/* SEEDED: this slot came from a seed, not from an update (the refresh looks) */
	snprintf(p, sizeof(p), "%s/SEEDED", tmp);
	r = ovl_file_write_atomic(p, bin, strlen(bin), 0644, err, errlen);
	if (r < 0)
		return r;
	snprintf(p, sizeof(p), "%s/bin", tmp);
	if ((r = sync_dir(p)) < 0 || (r = sync_dir(tmp)) < 0) {
		snprintf(err, errlen, "cannot sync '%.400s': %s", tmp, strerror(-r));
		return r;
	}
	snprintf(a, sizeof(a), "%s/slots/a", b->dir);
	if (is_dir(a)) {
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, a, RENAME_EXCHANGE) < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot put '%.200s' in place of '%.200s': %s", tmp, a, strerror(-r));
			return r;
		}
		remove_tree(tmp, 0); /* the old slot a: a leftover is removed at the next seed */
	} else if (rename(tmp, a) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot rename '%.200s' to '%.200s': %s", tmp, a, strerror(-r));
		return r;
	}
	snprintf(p, sizeof(p), "%s/slots", b->dir);
	return sync_dir(p);
}

/* ---- the state -------------------------------------------------------------- */

static int write_fresh_state(struct boot *b, char slot, const char *version, bool good,
			     const char *fallback)
{
	struct boot_state st;
	char err[512];
	int i = boot_slot_index(slot), r;

	memset(&st, 0, sizeof(st));
	st.primary = slot;
	st.s[i].present = true;
	snprintf(st.s[i].version, sizeof(st.s[i].version), "%s", version);
	st.s[i].good = good;
	st.s[i].attempts = BOOT_ATTEMPTS_DEFAULT;
	if (fallback)
		snprintf(st.fallback, sizeof(st.fallback), "%s", fallback);
	r = boot_state_save_err(b->dir, &st, err, sizeof(err));
	if (r < 0)
		logf_("%s", err);
	return r;
}

/*
 * The state to boot from: the file when it parses; otherwise (missing with
 * slots present, or malformed) a new one naming the slot the salvage picks;
 * otherwise, with a seed, a freshly seeded slot a. 0 or -errno (logged).
 */
static int state_get(struct boot *b, struct boot_state *st)
{
	char err[512], path[PATH_MAX], bad[PATH_MAX], raw[BOOT_STATE_MAX_BYTES];
	char reason[BOOT_FALLBACK_MAX_CHARS], version[BOOT_VERSION_MAX_CHARS], slotdir[PATH_MAX];
	bool runnable[2] = { slot_runnable(b, 0), slot_runnable(b, 1) };
	size_t len = 0;
	bool seeded = false;
	char x;
	int r, fd;

	r = boot_state_load(b->dir, st, err, sizeof(err));
	if (r == 0)
		return 0;
	if (r != -ENOENT && r != -EINVAL) {
		logf_("%s", err);
		return r;
	}
	if (r == -ENOENT && !runnable[0] && !runnable[1]) {
		/* a first start */
		if (!b->seed) {
			logf_("no boot state in '%s' and no slot: give --seed DIR for the first start", b->dir);
			return -ENOENT;
		}
		r = seed_slot_a(b, version, sizeof(version), err, sizeof(err));
		if (r < 0) {
			logf_("cannot seed slot a: %s", err);
			return r;
		}
		logf_("first start: slot a seeded from '%s' (version %s)", b->seed, version);
		r = write_fresh_state(b, 'a', version, true, NULL);
		return r < 0 ? r : boot_state_load(b->dir, st, err, sizeof(err));
	}
	snprintf(path, sizeof(path), "%s/boot/state", b->dir);
	if (r == -EINVAL) {
		logf_("refusing the boot state: %s", err);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, raw, sizeof(raw));

			len = n > 0 ? (size_t)n : 0;
			close(fd);
		}
		snprintf(bad, sizeof(bad), "%s/boot/state.bad", b->dir);
		if (rename(path, bad) == 0)
			logf_("the refused state is kept as '%s'", bad);
	} else {
		snprintf(err, sizeof(err), "boot state '%.400s' is missing", path);
		logf_("%s but slots exist", err);
	}
	x = boot_state_salvage(raw, len, runnable);
	if (!x) {
		if (!b->seed) {
			logf_("no slot with a runnable bin/shelf-node and no --seed: nothing to boot");
			return -ENOENT;
		}
		r = seed_slot_a(b, version, sizeof(version), err, sizeof(err));
		if (r < 0) {
			logf_("cannot seed slot a: %s", err);
			return r;
		}
		x = 'a';
		seeded = true;
		logf_("slot a seeded again from '%s' (version %s)", b->seed, version);
	} else {
		snprintf(slotdir, sizeof(slotdir), "%s/slots/%c", b->dir, x);
		slot_version(slotdir, version, sizeof(version));
		if (!version[0])
			snprintf(version, sizeof(version), "0.0.0");
	}
	/* the salvaged slot keeps good only when the state said so (or it is a fresh seed) */
	{
		bool good = true;

		if (len > 0 && !seeded) {
			char mark[16];

			snprintf(mark, sizeof(mark), "%c.good 1\n", x);
			good = memmem(raw, len, mark, strlen(mark)) != NULL;
		}
		snprintf(reason, sizeof(reason), "boot state refused (%.160s); booting slot %c", err, x);
		r = write_fresh_state(b, x, version, good, reason);
	}
	if (r < 0)
		return r;
	logf_("new boot state: slot %c (version %s) only", x, version);
	return boot_state_load(b->dir, st, err, sizeof(err));
}

/*
 * A developer's convenience that is also safe on a fleet: a slot a that was
 * seeded and never replaced by an update (the state names slot a only) is
 * refreshed when the seed's shelf-node differs from its own.
 */
static void seed_refresh(struct boot *b, struct boot_state *st)
{
	char bin[PATH_MAX], boards[PATH_MAX], mine[PATH_MAX], marker[PATH_MAX], err[512];
	char version[BOOT_VERSION_MAX_CHARS];

	if (!b->seed || !st->s[0].present || st->s[1].present || !st->s[0].good)
		return;
	snprintf(marker, sizeof(marker), "%s/slots/a/SEEDED", b->dir);
	if (access(marker, F_OK) < 0 || seed_paths(b, bin, boards, sizeof(bin)) < 0)
		return;
	snprintf(mine, sizeof(mine), "%s/slots/a/bin/shelf-node", b->dir);
	if (same_file(bin, mine))
		return;
	if (seed_slot_a(b, version, sizeof(version), err, sizeof(err)) < 0) {
		logf_("cannot refresh slot a from the seed: %s", err);
		return;
	}
	if (write_fresh_state(b, 'a', version, true, NULL) == 0) {
		logf_("slot a refreshed from the changed seed '%s' (version %s; no update had replaced it)", bin, version);
		boot_state_load(b->dir, st, err, sizeof(err));
	}
}

/* ---- running the node ---------------------------------------------------- */

static void write_pid_file(const struct boot *b, pid_t pid)
{
	char buf[32], err[256];

	if (!b->pid_file)
		return;
	snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	if (ovl_file_write_atomic(b->pid_file, buf, strlen(buf), 0644, err, sizeof(err)) < 0)
		logf_("%s", err);
}

static pid_t start_node(struct boot *b, char slot, const char *version)
{
	char bin[PATH_MAX], boards[PATH_MAX], s[2] = { slot, 0 };
	pid_t parent = getpid(), pid;

	snprintf(bin, sizeof(bin), "%s/slots/%c/bin/shelf-node", b->dir, slot);
	snprintf(boards, sizeof(boards), "%s/slots/%c/boards", b->dir, slot);
	pid = fork();
	if (pid < 0) {
		logf_("cannot fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* a dead shelf-boot is a dead board: the node goes with it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		sigprocmask(SIG_SETMASK, &b->orig, NULL);
		setenv("SHELF_SLOT", s, 1);
		setenv("SHELF_SLOT_VERSION", version, 1);
		setenv("SHELF_BOARDS", boards, 1);
		setenv("SHELF_BOOT_STATE", b->dir, 1);
		b->node_argv[0] = bin;
		execv(bin, b->node_argv);
		fprintf(stderr, "shelf-boot: cannot start '%s': %s\n", bin, strerror(errno));
		_exit(127);
	}
	write_pid_file(b, pid);
	return pid;
}

/* sleep ms, or until SIGTERM/SIGINT: true when one came */
static bool sleep_or_stop(struct boot *b, int64_t ms)
{
	uint64_t end = ovl_mono_ms() + (uint64_t)ms;

	for (;;) {
		uint64_t now = ovl_mono_ms();
		struct timespec ts;
		int sig;

		if (now >= end)
			return false;
		ts.tv_sec = (time_t)((end - now) / 1000);
		ts.tv_nsec = (long)((end - now) % 1000) * 1000000L;
		sig = sigtimedwait(&b->sigs, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			return true;
	}
}

enum run_end { RUN_STOPPED, RUN_RESTART, RUN_FAILED };

/* Run the started node until it exits; *status is its wait status. */
static enum run_end run_node(struct boot *b, pid_t pid, char slot, bool good, int *exit_code)
{
	int i = boot_slot_index(slot), status = 0;
	uint64_t start = ovl_mono_ms(), term_at = 0, next_look = start + BOOT_POLL_MS;
	bool stopping = false, deadline_hit = false;

	for (;;) {
		struct timespec ts = { 0, BOOT_POLL_MS * 1000000L };
		int sig = sigtimedwait(&b->sigs, NULL, &ts);
		pid_t w;
		uint64_t now;

		if (sig == SIGTERM || sig == SIGINT) {
			if (!stopping)
				logf_("%s: stopping the node of slot %c", strsignal(sig), slot);
			stopping = true;
			kill(pid, sig);
		}
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		now = ovl_mono_ms();
		if (!good && !deadline_hit && now >= next_look) {
			struct boot_state st;
			char err[512];

			next_look = now + BOOT_POLL_MS;
			if (boot_state_load(b->dir, &st, err, sizeof(err)) == 0 && st.s[i].present &&
			    st.s[i].good) {
				good = true;
				logf_("slot %c (version %s) marked good by its health gate", slot, st.s[i].version);
			} else if (now - start >= (uint64_t)b->deadline_ms) {
				deadline_hit = true;
				term_at = now;
				logf_("slot %c not marked good within %" PRId64 " ms: stopping it (SIGTERM)",
				      slot, b->deadline_ms);
				kill(pid, SIGTERM);
			}
		}
		if (term_at && now - term_at >= BOOT_KILL_GRACE_MS) {
			logf_("slot %c still running %d ms after SIGTERM: SIGKILL", slot, BOOT_KILL_GRACE_MS);
			kill(pid, SIGKILL);
			term_at = 0;
		}
	}
	if (WIFEXITED(status))
		*exit_code = WEXITSTATUS(status);
	else
		*exit_code = 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (stopping)
		return RUN_STOPPED;
	if (deadline_hit) {
		snprintf(b->last_fail[i], sizeof(b->last_fail[i]),
			 "not marked good within the deadline of %" PRId64 " ms", b->deadline_ms);
		return RUN_FAILED;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return RUN_STOPPED;
	if (WIFEXITED(status) && WEXITSTATUS(status) == BOOT_EXIT_RESTART) {
		b->last_fail[i][0] = '\0';
		return RUN_RESTART;
	}
	if (WIFEXITED(status))
		snprintf(b->last_fail[i], sizeof(b->last_fail[i]), "exited with code %d", WEXITSTATUS(status));
	else
		snprintf(b->last_fail[i], sizeof(b->last_fail[i]), "killed by signal %d (%s)",
			 WTERMSIG(status), strsignal(WTERMSIG(status)));
	return RUN_FAILED;
}

static int boot_loop(struct boot *b)
{
	for (;;) {
		struct boot_state st;
		bool runnable[2];
		char slot = 0, why[BOOT_FALLBACK_MAX_CHARS + 64], err[512], version[BOOT_VERSION_MAX_CHARS];
		int pi, code = 0, r;
		bool good;
		pid_t pid;
		enum run_end end;

		r = state_get(b, &st);
		if (r < 0)
			return 1;
		seed_refresh(b, &st);
		runnable[0] = slot_runnable(b, 0);
		runnable[1] = slot_runnable(b, 1);
		pi = boot_slot_index(st.primary);
		r = boot_choose(&st, runnable, pi >= 0 ? b->last_fail[pi] : NULL, &slot, why, sizeof(why));
		if (r < 0) {
			logf_("%s", why);
			return 1;
		}
		if (why[0])
			logf_("falling back to slot %c: %s", slot, why);
		good = st.s[boot_slot_index(slot)].good;
		snprintf(version, sizeof(version), "%s", st.s[boot_slot_index(slot)].version);
		r = boot_state_save_err(b->dir, &st, err, sizeof(err));
		if (r < 0) {
			/* an attempt that is not counted could repeat for ever */
			if (!good) {
				logf_("cannot count the attempt of slot %c: %s", slot, err);
				return 1;
			}
			logf_("warning: %s", err);
		}
		logf_("starting slot %c (version %s, %s)", slot, version,
		      good ? "good" : "on trial");
		if (!good)
			logf_("slot %c has %u attempt(s) left after this one", slot,
			      st.s[boot_slot_index(slot)].attempts);
		pid = start_node(b, slot, version);
		if (pid < 0) {
			if (sleep_or_stop(b, BOOT_RETRY_MS))
				return 0;
			continue;
		}
		end = run_node(b, pid, slot, good, &code);
		if (end == RUN_STOPPED) {
			logf_("the node of slot %c stopped (status %d)", slot, code);
			return code;
		}
		if (end == RUN_RESTART) {
			logf_("the node of slot %c asked for a restart (exit %d)", slot, BOOT_EXIT_RESTART);
			continue;
		}
		logf_("the node of slot %c %s; starting again in %d ms", slot,
		      b->last_fail[boot_slot_index(slot)], BOOT_RETRY_MS);
		if (sleep_or_stop(b, BOOT_RETRY_MS))
			return 0;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "seed", required_argument, NULL, 's' },
		{ "seed-boards", required_argument, NULL, 'B' },
		{ "deadline", required_argument, NULL, 't' },
		{ "node-pid-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct boot *b = calloc(1, sizeof(*b));
	const char *dir = NULL;
	int c, rc = 2;

	if (!b) {
		fprintf(stderr, "shelf-boot: out of memory\n");
		return 1;
	}
	b->deadline_ms = BOOT_DEADLINE_DEFAULT_MS;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 's': b->seed = optarg; break;
		case 'B': b->seed_boards = optarg; break;
		case 'p': b->pid_file = optarg; break;
		case 't':
			if (ovl_parse_ms(optarg, &b->deadline_ms) < 0 || b->deadline_ms < 1000 ||
			    b->deadline_ms > 86400000) {
				fprintf(stderr, "shelf-boot: --deadline '%s' is not a duration of 1s..24h (e.g. 120s)\n", optarg);
				goto out;
			}
			break;
		case 'h': usage(stdout); rc = 0; goto out;
		default: usage(stderr); goto out;
		}
	}
	if (!dir) {
		fprintf(stderr, "shelf-boot: --state-dir is required\n");
		usage(stderr);
		goto out;
	}
	/* NODE_ARGS: what follows "--" (getopt stops there and consumes it) */
	b->node_argc = argc - optind;
	b->node_argv = calloc((size_t)b->node_argc + 2, sizeof(char *));
	if (!b->node_argv) {
		fprintf(stderr, "shelf-boot: out of memory\n");
		rc = 1;
		goto out;
	}
	for (int i = 0; i < b->node_argc; i++)
		b->node_argv[i + 1] = argv[optind + i];
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "shelf-boot: cannot create '%s': %s\n", dir, strerror(errno));
		rc = 1;
		goto out;
	}
	{
		char *real = realpath(dir, NULL);

		if (!real || strlen(real) >= sizeof(b->dir)) {
			fprintf(stderr, "shelf-boot: '%s': %s\n", dir, real ? "path too long" : strerror(errno));
			free(real);
			rc = 1;
			goto out;
		}
		memcpy(b->dir, real, strlen(real) + 1);
		free(real);
	}
	sigemptyset(&b->sigs);
	sigaddset(&b->sigs, SIGTERM);
	sigaddset(&b->sigs, SIGINT);
	sigaddset(&b->sigs, SIGCHLD);
	sigprocmask(SIG_BLOCK, &b->sigs, &b->orig);
	rc = boot_loop(b);
out:
	if (b)
		free(b->node_argv);
	free(b);
	return rc;
}
