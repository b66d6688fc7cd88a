#ifndef SHELF_CLI_JSON_H
#define SHELF_CLI_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Length of the valid UTF-8 sequence at s[0..n) (n >= 1), or 0 when the
 * bytes there are not one (overlong forms, surrogates and code points
 * beyond U+10FFFF are not). */
size_t cli_utf8_len(const uint8_t *s, size_t n);

/*
 * Print bytes as one JSON string, quotes included: '"', '\\' and control
 * characters escaped, valid UTF-8 passed through, and any byte that is not
 * part of valid UTF-8 written as \u00XX of its value (so keys that are not
 * text still give valid JSON; such keys are shown, not round-tripped).
 */
void cli_json_str(FILE *f, const void *s, size_t n);

/*
 * The same for a C string, as a borrowed string (quotes included) for
 * printf's %s: valid until 16 more calls (a ring of buffers), so one printf
 * may take several. "" if out of memory.
 */
const char *cli_json_q(const char *s);

#endif
