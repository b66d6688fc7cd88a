/*
 * boot_state: the A/B slots of a node and its boot state (docs/FORMAT.md,
 * "Slots and the boot state"), in the spirit of barebox's bootchooser.
 *
 * Under a node's state directory D:
 *   D/boot/state    the boot state, text, written atomically
 *   D/boot/lock     flock'd (LOCK_EX) by whoever rewrites the state
 *   D/slots/a, D/slots/b   a slot: VERSION, bin/shelf-node, boards/...
 *
 * The state is one `key value` line each, in exactly this order:
 *   shelf-boot 1
 *   primary a|b                 the slot to try first
 *   a.version V                 \
 *   a.attempts N                 } only when slot a is present
 *   a.good 0|1                  /
 *   b.version / b.attempts / b.good   the same for slot b
 *   last a|b|-                  the slot started last ('-': none yet)
 *   fallback REASON             optional, one line
 * Anything else (an unknown or repeated key, a key out of order, a bad
 * number, a primary naming a missing slot, no slot at all, a missing final
 * newline, a control byte, more than BOOT_STATE_MAX_BYTES) is refused.
 *
 * Every function returns 0 or a negative errno and never logs; the ones
 * that take err fill it with a message naming the file and the line.
 */
#ifndef NODE_BOOTSTATE_H
#define NODE_BOOTSTATE_H

#include <stdbool.h>
#include <stddef.h>

#define BOOT_STATE_MAX_BYTES 4096  /* a longer state file is refused */
#define BOOT_ATTEMPTS_DEFAULT 3    /* attempts a slot gets when tried or marked good */
#define BOOT_ATTEMPTS_MAX 100      /* a larger count is refused */
#define BOOT_VERSION_MAX_CHARS 24  /* "65535.65535.65535" and a NUL fit */
#define BOOT_FALLBACK_MAX_CHARS 256

struct boot_slot {
	bool present;                        /* named in the state */
	char version[BOOT_VERSION_MAX_CHARS];/* MAJOR.MINOR.PATCH */
	unsigned attempts;                   /* remaining attempts (0..BOOT_ATTEMPTS_MAX) */
	bool good;                           /* marked good by its health gate */
};

struct boot_state {
	char primary;                        /* 'a' or 'b': the slot to try first */
	char last;                           /* 'a', 'b' or 0: the slot started last */
	struct boot_slot s[2];               /* [0] = a, [1] = b */
	char fallback[BOOT_FALLBACK_MAX_CHARS]; /* why shelf-boot fell back ("" none) */
};

/* 0 for 'a', 1 for 'b', -EINVAL for anything else. */
int boot_slot_index(char slot);

/* Whether s is a version MAJOR.MINOR.PATCH (each 0..65535, no leading
 * zeros but "0"). */
bool boot_version_valid(const char *s);

/*
 * Parse `len` bytes of a boot state into *st (fully overwritten). 0, or
 * -EINVAL with err naming the line and what is wrong with it (`name` is the
 * file name used in the message). Never reads past len.
 */
int boot_state_parse(struct boot_state *st, const char *buf, size_t len, const char *name,
		     char *err, size_t errlen);

/* Format *st into buf (cap bytes, NUL-terminated). The length written, or
 * -EINVAL when *st would not parse back (err says why), -E2BIG when cap is
 * too small. */
int boot_state_format(const struct boot_state *st, char *buf, size_t cap, char *err, size_t errlen);

/*
 * Read state_dir/boot/state into *st. 0; -ENOENT when there is no state
 * file (a first start); -EINVAL when it is malformed; another -errno when
 * it cannot be read. err says which.
 */
int boot_state_load(const char *state_dir, struct boot_state *st, char *err, size_t errlen);

/* Write *st to state_dir/boot/state atomically (a crash leaves the old or
 * the new file), under flock(state_dir/boot/lock); creates state_dir/boot.
 * 0 or -errno (-EINVAL: *st is not a valid state). */
int boot_state_save(const char *state_dir, const struct boot_state *st);
/* The same, with err saying what failed. */
int boot_state_save_err(const char *state_dir, const struct boot_state *st, char *err,
			size_t errlen);

/* The health gate passed: under the lock, load the state, give `slot`
 * good=1 and attempts=BOOT_ATTEMPTS_DEFAULT, save. -ENOENT when the state
 * does not name that slot. */
int boot_state_mark_good(const char *state_dir, char slot);

/* After an install into `slot` (its directory complete): under the lock,
 * the slot gets `version`, good=0, attempts=BOOT_ATTEMPTS_DEFAULT and
 * becomes primary; `fallback` is cleared. -EINVAL for a bad slot/version. */
int boot_state_set_try(const char *state_dir, char slot, const char *version);

/*
 * The boot chooser's decision, pure (no I/O): which slot to start now.
 * runnable[i] says whether slot i has an executable bin/shelf-node;
 * last_fail (may be NULL or "") says how the primary's last attempt ended,
 * for the reason. Rules:
 *   - the primary, when present, runnable, and good or with attempts > 0;
 *   - else the other slot when present, runnable, and good (preferred) or
 *     with attempts > 0: it becomes primary, and `fallback` and `why` say
 *     why the primary was left;
 *   - else nothing: -ENOENT, why says why.
 * On success *slot is the slot, a not-good slot's attempts are decremented,
 * st->last is set; `why` is "" unless a fallback happened. The caller saves
 * *st before starting the slot.
 */
int boot_choose(struct boot_state *st, const bool runnable[2], const char *last_fail,
		char *slot, char *why, size_t whylen);

/*
 * A malformed state's salvage: the slot to boot when the state cannot be
 * parsed. Prefers a runnable slot that a line `X.good 1` of buf marks good,
 * then slot a, then b, if runnable. 'a'/'b', or 0 when neither is runnable.
 */
char boot_state_salvage(const char *buf, size_t len, const bool runnable[2]);

#endif
