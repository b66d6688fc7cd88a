/* The CLI's pure text helpers (text.h). */
#include "text.h"

#include <errno.h>
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
	if (b - a >= CLI_RANGE_MAX_BYTES) {
		snprintf(err, errlen, "--range '%s' spans %llu bytes; at most %u (64 MiB, the "
			 "largest object)", s, (unsigned long long)(b - a) + 1, CLI_RANGE_MAX_BYTES);
		return -EINVAL;
	}
	*off = a;
	*len = b - a + 1;
	return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		len = 2, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		len = 3, cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

bool cli_utf8_valid(const void *key, size_t n)
{
	const uint8_t *s = key;

	for (size_t i = 0; i < n;) {
		size_t l = utf8_len(s + i, n - i);

		if (!l)
			return false;
		i += l;
	}
	return true;
}

static bool needs_quote(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t l = utf8_len(s + i, n - i);

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
		size_t l = utf8_len(s + i, n - i);
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
