#ifndef SHELF_CLI_TEXT_H
#define SHELF_CLI_TEXT_H

/*
 * The CLI's pure text helpers (no I/O besides the FILE given; unit-tested
 * by tests/unit/test_cli.c): the --range grammar, keys quoted for a line of
 * `ls`, keys rendered losslessly in JSON, and the environment's defaults.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_RANGE_MAX_BYTES ((uint64_t)INT64_MAX) /* offsets: objects have no practical limit */
#define CLI_BROKER_DEFAULT "tcp://[::1]:7400"      /* without --broker or $SHELF_BROKER */

/*
 * Parse a --range value: "START-END" (bytes START..END, inclusive) or
 * "START-" (from START to the end of the object). START and END are
 * decimal digits only (no sign, no spaces, nothing after), START <= END,
 * START and END are at most CLI_RANGE_MAX_BYTES (large objects have no
 * practical size limit, so neither has a range). *off is START,
 * *len END-START+1 (UINT64_MAX for "START-"). 0, or -EINVAL with a
 * sentence naming --range in err.
 */
int cli_range_parse(const char *s, uint64_t *off, uint64_t *len, char *err, size_t errlen);

/* Whether key[0..n) is valid UTF-8 (no overlong forms, no surrogates). */
bool cli_utf8_valid(const void *key, size_t n);

/*
 * Print a key on one line of text the way git quotes paths: as it is
 * when it is valid UTF-8 with no control character, '"' or '\\'; else in
 * double quotes with C escapes (\a \b \t \n \v \f \r \" \\) and \ooo
 * (three octal digits) for every other control byte and every byte that is
 * not part of valid UTF-8. Valid multi-byte UTF-8 is printed as it is.
 */
void cli_key_quote(FILE *f, const void *key, size_t n);

/*
 * Hint counters of NODE_STAT (a node holding hinted copies for others):
 * CLI_HINTS_TOTAL is the hints it holds in all; CLI_HINTS_FOR followed by
 * CLI_HINTS_HEX_MIN..64 lower-case hex digits counts those for the node
 * whose id, in hex, starts with them (nodes send 16 digits).
 * cli_hints_for(name, value, hexid): the hints a counter `name` of value
 * `value` counts for the node of 64-digit hex id `hexid`: value when name
 * is CLI_HINTS_FOR<prefix of hexid>, else 0.
 */
#define CLI_HINTS_TOTAL "hints_waiting"
#define CLI_HINTS_FOR "hints_for_"
#define CLI_HINTS_HEX_MIN 8
uint64_t cli_hints_for(const char *name, uint64_t value, const char *hexid);

/*
 * Print a key as one JSON member, losslessly: "key": "TEXT" when it is
 * valid UTF-8, else "key_hex": "HEX" (its bytes, lowercase hex).
 */
void cli_json_key(FILE *f, const void *key, size_t n);

/*
 * Why key[0..len) cannot be written as a relative path under a directory
 * (`get --batch --out`, `stage`), or NULL when it can: longer than
 * CLI_KEY_MAX_BYTES, a NUL byte, the reserved prefix fe x 8, absolute, an
 * empty, '.' or '..' component, a component over CLI_NAME_MAX_BYTES.
 * The text is static or written into why[0..wlen).
 */
#define CLI_KEY_MAX_BYTES 1024
#define CLI_NAME_MAX_BYTES 255
const char *cli_path_refusal(const char *key, size_t len, char *why, size_t wlen);

/*
 * One progress bar line (no '\r', no newline) into buf[0..len):
 *   WHAT [#####     ]  42% 12/40 files 3.0/7.1 MiB 5.2 MB/s ETA 0:03
 * files_total 0 leaves the files out; ETA is shown while done < total and
 * the rate is known (bytes_total 0: from the files). seconds is the time
 * since the start.
 */
void cli_bar_text(char *buf, size_t len, const char *what, uint64_t files_done,
		  uint64_t files_total, uint64_t bytes_done, uint64_t bytes_total, double seconds);

/* The environment variable name's value, or def when it is unset or empty. */
const char *cli_env(const char *name, const char *def);

#endif
