/* The CLI's pure text helpers (text.h). */
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* A decimal number of s[0..n): digits only, no overflow. */
static int dec(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int cli_range_parse(const char *s, uint64_t *off, uint64_t *len, char *err, size_t errlen)
{
	const char *dash = strchr(s, '-');
	uint64_t a = 0, b = 0;

	if (!dash || dec(s, (size_t)(dash - s), &a) < 0 ||
	    (dash[1] && dec(dash + 1, strlen(dash + 1), &b) < 0)) {
		snprintf(err, errlen, "--range '%s' is not START-END or START- (decimal byte "
			 "offsets, END inclusive, nothing else)", s);
		return -EINVAL;
	}
	if (a > CLI_RANGE_MAX_BYTES || (dash[1] && b > CLI_RANGE_MAX_BYTES)) {
		snprintf(err, errlen, "--range '%s': offsets are at most %llu", s,
			 (unsigned long long)CLI_RANGE_MAX_BYTES);
		return -EINVAL;
	}
	if (!dash[1]) {
		*off = a;
		*len = UINT64_MAX;
		return 0;
	}
	if (b < a) {
		snprintf(err, errlen, "--range '%s': END %llu is before START %llu", s,
			 (unsigned long long)b, (unsigned long long)a);
		return -EINVAL;
	}
	*off = a;
	*len = b - a + 1;
	return 0;
}

bool cli_utf8_valid(const void *key, size_t n)
{
	const uint8_t *s = key;

	for (size_t i = 0; i < n;) {
		size_t l = cli_utf8_len(s + i, n - i);

		if (!l)
			return false;
		i += l;
	}
	return true;
}

static bool needs_quote(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t l = cli_utf8_len(s + i, n - i);

		if (!l || (l == 1 && (s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' || s[i] == '\\')))
			return true;
		i += l;
	}
	return false;
}

void cli_key_quote(FILE *f, const void *key, size_t n)
{
	static const char esc[] = "\a\b\t\n\v\f\r\"\\", chr[] = "abtnvfr\"\\";
	const uint8_t *s = key;

	if (!needs_quote(s, n)) {
		fwrite(s, 1, n, f);
		return;
	}
	fputc('"', f);
	for (size_t i = 0; i < n;) {
		size_t l = cli_utf8_len(s + i, n - i);
		const char *e = l == 1 && s[i] ? strchr(esc, s[i]) : NULL;

		if (e)
			fprintf(f, "\\%c", chr[e - esc]);
		else if (!l || (l == 1 && (s[i] < 0x20 || s[i] == 0x7f)))
			fprintf(f, "\\%03o", s[i]);
		else
			fwrite(s + i, 1, l, f);
		i += l ? l : 1;
	}
	fputc('"', f);
}

uint64_t cli_hints_for(const char *name, uint64_t value, const char *hexid)
{
	size_t pl = strlen(CLI_HINTS_FOR), len;
	const char *x = name + pl;

	if (strncmp(name, CLI_HINTS_FOR, pl) != 0)
		return 0;
	len = strlen(x);
	if (len < CLI_HINTS_HEX_MIN || len > 64 || strspn(x, "0123456789abcdef") != len ||
	    strncmp(hexid, x, len) != 0)
		return 0;
	return value;
}

void cli_json_key(FILE *f, const void *key, size_t n)
{
	const uint8_t *s = key;

	if (cli_utf8_valid(key, n)) {
		fputs("\"key\": ", f);
		cli_json_str(f, key, n);
		return;
	}
	fputs("\"key_hex\": \"", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", s[i]);
	fputc('"', f);
}

const char *cli_path_refusal(const char *key, size_t len, char *why, size_t wlen)
{
	size_t comp = 0;

	if (len > CLI_KEY_MAX_BYTES) {
		snprintf(why, wlen, "the key is %zu bytes long, at most %d", len, CLI_KEY_MAX_BYTES);
		return why;
	}
	if (len == 0)
		return "the key is empty";
	if (memchr(key, 0, len))
		return "the key holds a NUL byte";
	if (len >= 8 && memcmp(key, "\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe", 8) == 0)
		return "the key begins with the reserved prefix fe x 8 (libshelf's own objects)";
	if (key[0] == '/')
		return "the key is an absolute path";
	for (size_t i = 0; i <= len; i++) {
		if (i < len && key[i] != '/') {
			comp++;
			continue;
		}
		if (comp == 0)
			return "the key has an empty path component ('//' or a trailing '/')";
		if ((comp == 1 && key[i - 1] == '.') ||
		    (comp == 2 && key[i - 1] == '.' && key[i - 2] == '.'))
			return "the key has a '.' or '..' path component";
		if (comp > CLI_NAME_MAX_BYTES) {
			snprintf(why, wlen, "a path component of the key is %zu bytes, at most %d", comp,
				 CLI_NAME_MAX_BYTES);
			return why;
		}
		comp = 0;
	}
	return NULL;
}

void cli_bar_text(char *buf, size_t len, const char *what, uint64_t files_done,
		  uint64_t files_total, uint64_t bytes_done, uint64_t bytes_total, double seconds)
{
	uint64_t done = bytes_total ? bytes_done : files_done;
	uint64_t total = bytes_total ? bytes_total : files_total;
	unsigned fill = total ? (unsigned)((done > total ? total : done) * 30 / total) : 30;
	char cells[31], files[64] = "", eta[32] = "";
	double rate = seconds > 0 ? (double)done / seconds : 0;

	memset(cells, '#', fill);
	memset(cells + fill, ' ', 30 - fill);
	cells[30] = 0;
	if (files_total)
		snprintf(files, sizeof(files), " %llu/%llu files", (unsigned long long)files_done,
			 (unsigned long long)files_total);
	if (done < total && rate > 0) {
		uint64_t left = (uint64_t)((double)(total - done) / rate + 0.5);

		snprintf(eta, sizeof(eta), " ETA %llu:%02llu", (unsigned long long)(left / 60),
			 (unsigned long long)(left % 60));
	}
	snprintf(buf, len, "%s [%s] %3u%%%s %.1f/%.1f MiB %.1f MB/s%s", what, cells,
		 total ? (unsigned)((done > total ? total : done) * 100 / total) : 100, files,
		 bytes_done / 1048576.0, bytes_total / 1048576.0,
		 seconds > 0 ? bytes_done / seconds / 1e6 : 0.0, eta);
}

const char *cli_env(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}
