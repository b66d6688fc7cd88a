#include "ovl_conf.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define CONF_LINE_MAX 1024

static const char *const type_names[] = { "string", "int", "bool", "size", "duration" };

int ovl_parse_size(const char *s, uint64_t *out)
{
	char *end = NULL;
	unsigned long long v;
	uint64_t mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case '\0': break;
	case 'K': mult = 1ULL << 10; end++; break;
	case 'M': mult = 1ULL << 20; end++; break;
	case 'G': mult = 1ULL << 30; end++; break;
	case 'T': mult = 1ULL << 40; end++; break;
	default: return -EINVAL;
	}
	if (mult > 1 && (*end == 'i' || *end == 'I'))
		end++;
	if (mult > 1 && (*end == 'B' || *end == 'b'))
		end++;
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

int ovl_parse_ms(const char *s, int64_t *out)
{
	char *end = NULL;
	long long v;
	int64_t mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		mult = 60000;
	else if (strcmp(end, "h") == 0)
		mult = 3600000;
	else if (strcmp(end, "d") == 0)
		mult = 86400000;
	else
		return -EINVAL;
	if (v > INT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (unsigned i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int check_range(const struct ovl_conf_item *it, int64_t v, char *err, size_t errlen)
{
	if ((it->min || it->max) && (v < it->min || v > it->max)) {
		snprintf(err, errlen, "config key '%s': value %" PRId64 " is outside %" PRId64 "..%" PRId64,
			 it->name, v, it->min, it->max);
		return -ERANGE;
	}
	return 0;
}

static int set_item(const struct ovl_conf_item *it, void *obj, const char *value,
		    char *err, size_t errlen)
{
	char *field = (char *)obj + it->offset;
	const char *v = value ? value : "";
	int ret = 0;

	switch (it->type) {
	case OVL_CONF_STR:
		if (strlen(v) >= it->size) {
			snprintf(err, errlen, "config key '%s': value is longer than %zu bytes",
				 it->name, it->size - 1);
			return -ERANGE;
		}
		memcpy(field, v, strlen(v) + 1);
		return 0;
	case OVL_CONF_BOOL: {
		bool b = false;

		if (*v && parse_bool(v, &b) < 0) {
			snprintf(err, errlen, "config key '%s': '%s' is not a boolean (true or false)",
				 it->name, v);
			return -EINVAL;
		}
		memcpy(field, &b, sizeof(b));
		return 0;
	}
	case OVL_CONF_INT: {
		char *end = NULL;
		long long n = 0;

		if (*v) {
			errno = 0;
			n = strtoll(v, &end, 10);
			if (errno || *end || end == v) {
				snprintf(err, errlen, "config key '%s': '%s' is not an integer",
					 it->name, v);
				return -EINVAL;
			}
		}
		ret = check_range(it, n, err, errlen);
		if (ret == 0)
			memcpy(field, &(int64_t){ n }, sizeof(int64_t));
		return ret;
	}
	case OVL_CONF_SIZE: {
		uint64_t n = 0;

		if (*v && (ret = ovl_parse_size(v, &n)) < 0) {
			snprintf(err, errlen,
				 ret == -ERANGE ? "config key '%s': '%s' is too large"
						: "config key '%s': '%s' is not a size (a number with optional K, M, G or T)",
				 it->name, v);
			return ret;
		}
		if (n > INT64_MAX) {
			snprintf(err, errlen, "config key '%s': '%s' is too large", it->name, v);
			return -ERANGE;
		}
		ret = check_range(it, (int64_t)n, err, errlen);
		if (ret == 0)
			memcpy(field, &n, sizeof(n));
		return ret;
	}
	case OVL_CONF_MS: {
		int64_t n = 0;

		if (*v && ovl_parse_ms(v, &n) < 0) {
			snprintf(err, errlen,
				 "config key '%s': '%s' is not a duration (a number with ms, s, m or h)",
				 it->name, v);
			return -EINVAL;
		}
		ret = check_range(it, n, err, errlen);
		if (ret == 0)
			memcpy(field, &n, sizeof(n));
		return ret;
	}
	}
	snprintf(err, errlen, "config key '%s': unknown type", it->name);
	return -EINVAL;
}

int ovl_conf_defaults(const struct ovl_conf_item *tab, void *obj, char *err, size_t errlen)
{
	for (const struct ovl_conf_item *it = tab; it->name; it++) {
		int ret = set_item(it, obj, it->def, err, errlen);

		if (ret < 0)
			return ret;
	}
	return 0;
}

int ovl_conf_set(const struct ovl_conf_item *tab, void *obj, const char *key,
		 const char *value, char *err, size_t errlen)
{
	for (const struct ovl_conf_item *it = tab; it->name; it++) {
		if (strcmp(it->name, key) == 0)
			return set_item(it, obj, value, err, errlen);
	}
	snprintf(err, errlen, "unknown config key '%s'", key);
	return -ENOENT;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Splits "key = value" (or key=value) in place. */
static int split_pair(char *line, char **key, char **value)
{
	char *eq = strchr(line, '=');

	if (!eq)
		return -EINVAL;
	*eq = '\0';
	*key = trim(line);
	*value = trim(eq + 1);
	return **key ? 0 : -EINVAL;
}

int ovl_conf_set_pair(const struct ovl_conf_item *tab, void *obj, const char *pair,
		      char *err, size_t errlen)
{
	char buf[CONF_LINE_MAX];
	char *key = NULL, *value = NULL;

	if (strlen(pair) >= sizeof(buf)) {
		snprintf(err, errlen, "setting '%.32s...' is longer than %d bytes", pair,
			 CONF_LINE_MAX - 1);
		return -EINVAL;
	}
	memcpy(buf, pair, strlen(pair) + 1);
	if (split_pair(buf, &key, &value) < 0) {
		snprintf(err, errlen, "setting '%s' is not of the form key=value", pair);
		return -EINVAL;
	}
	return ovl_conf_set(tab, obj, key, value, err, errlen);
}

int ovl_conf_load_file(const struct ovl_conf_item *tab, void *obj, const char *path,
		       char *err, size_t errlen)
{
	char line[CONF_LINE_MAX + 2];
	char sub[512];
	FILE *f = NULL;
	int lineno = 0, ret = 0;

	f = fopen(path, "r");
	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "cannot open config '%s': %s", path, strerror(errno));
		goto out;
	}
	while (fgets(line, sizeof(line), f)) {
		char *key = NULL, *value = NULL, *s, *hash;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line is longer than %d bytes", path, lineno,
				 CONF_LINE_MAX);
			ret = -EINVAL;
			goto out;
		}
		s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		hash = strstr(s, " #");
		if (hash)
			*hash = '\0';
		if (split_pair(s, &key, &value) < 0) {
			snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
			ret = -EINVAL;
			goto out;
		}
		ret = ovl_conf_set(tab, obj, key, value, sub, sizeof(sub));
		if (ret < 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, sub);
			goto out;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "cannot read config '%s'", path);
		ret = -EIO;
	}
out:
	if (f)
		fclose(f);
	return ret;
}

void ovl_conf_print_help(const struct ovl_conf_item *tab, FILE *f)
{
	for (const struct ovl_conf_item *it = tab; it->name; it++)
		fprintf(f, "  %-22s %-8s (default: %s)\n      %s\n", it->name,
			type_names[it->type], it->def && *it->def ? it->def : "none",
			it->help ? it->help : "");
}

void ovl_conf_dump(const struct ovl_conf_item *tab, const void *obj, FILE *f)
{
	for (const struct ovl_conf_item *it = tab; it->name; it++) {
		const char *field = (const char *)obj + it->offset;

		fprintf(f, "%s = ", it->name);
		switch (it->type) {
		case OVL_CONF_STR: fprintf(f, "%s\n", field); break;
		case OVL_CONF_BOOL: fprintf(f, "%s\n", *(const bool *)field ? "true" : "false"); break;
		case OVL_CONF_INT:
		case OVL_CONF_MS: fprintf(f, "%" PRId64 "\n", *(const int64_t *)field); break;
		case OVL_CONF_SIZE: fprintf(f, "%" PRIu64 "\n", *(const uint64_t *)field); break;
		}
	}
}
