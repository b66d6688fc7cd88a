/*
 * ovl_conf: declarative configuration tables.
 *
 * A daemon describes its settings once, as a table of struct ovl_conf_item
 * (name, type, default, where the value lives in its config struct, limits,
 * help). The same table then gives defaults, parses `key = value` files
 * (board profiles, config files), applies command-line overrides and prints
 * help. Every value is validated as it is set: an unknown key or a bad value
 * is refused with a message that names the key, so a daemon can refuse to
 * start with a clear reason.
 *
 * All functions return 0 or a negative errno and, on error, write a message
 * into `err` (always NUL-terminated when errlen > 0).
 */
#ifndef OVL_CONF_H
#define OVL_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum ovl_conf_type {
	OVL_CONF_STR,  /* char array of `size` bytes inside the struct */
	OVL_CONF_INT,  /* int64_t, decimal, within [min, max] */
	OVL_CONF_BOOL, /* bool: true/false, yes/no, on/off, 1/0 */
	OVL_CONF_SIZE, /* uint64_t bytes, with K, M, G, T suffixes (powers of 1024) */
	OVL_CONF_MS,   /* int64_t milliseconds, with ms, s, m, h suffixes */
};

struct ovl_conf_item {
	const char *name;
	enum ovl_conf_type type;
	const char *def;  /* default as text, parsed like any value; NULL = empty/0 */
	size_t offset;    /* offsetof(struct, field) */
	size_t size;      /* OVL_CONF_STR: capacity of the char array */
	int64_t min, max; /* numeric limits (both 0: no limit) */
	const char *help;
};

#define OVL_CONF_END { NULL, 0, NULL, 0, 0, 0, 0, NULL }

/* Set every item of `obj` to its default. */
int ovl_conf_defaults(const struct ovl_conf_item *tab, void *obj, char *err, size_t errlen);

/* Set one item by name from text. -ENOENT for an unknown key, -EINVAL or
 * -ERANGE for a bad value. */
int ovl_conf_set(const struct ovl_conf_item *tab, void *obj, const char *key,
		 const char *value, char *err, size_t errlen);

/* Apply a `key = value` file: blank lines and lines starting with # are
 * ignored, and so is text after " #". Errors name the file and line. */
int ovl_conf_load_file(const struct ovl_conf_item *tab, void *obj, const char *path,
		       char *err, size_t errlen);

/* Apply "key=value" strings (for example from --set on a command line). */
int ovl_conf_set_pair(const struct ovl_conf_item *tab, void *obj, const char *pair,
		      char *err, size_t errlen);

/* Print one line per item: name, type, default and help. */
void ovl_conf_print_help(const struct ovl_conf_item *tab, FILE *f);

/* Print the current values as a `key = value` file. */
void ovl_conf_dump(const struct ovl_conf_item *tab, const void *obj, FILE *f);

/* Parse a byte size such as "64M" or "1G" (powers of 1024). */
int ovl_parse_size(const char *s, uint64_t *out);

/* Parse a duration such as "250ms", "5s", "10m", "24h", "30d" into milliseconds. */
int ovl_parse_ms(const char *s, int64_t *out);

#endif
