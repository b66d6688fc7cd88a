#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t cli_utf8_len(const uint8_t *s, size_t n)
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
	/* overlong forms, surrogates and beyond U+10FFFF are not text */
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

void cli_json_str(FILE *f, const void *str, size_t n)
{
	const uint8_t *s = str;

	fputc('"', f);
	for (size_t i = 0; i < n;) {
		size_t l = cli_utf8_len(s + i, n - i);

		if (l == 1 && s[i] == '"')
			fputs("\\\"", f);
		else if (l == 1 && s[i] == '\\')
			fputs("\\\\", f);
		else if (l == 1 && s[i] == '\n')
			fputs("\\n", f);
		else if (l == 1 && s[i] == '\t')
			fputs("\\t", f);
		else if (l == 1 && (s[i] < 0x20 || s[i] == 0x7f))
			fprintf(f, "\\u%04x", s[i]);
		else if (l)
			fwrite(s + i, 1, l, f);
		else
			fprintf(f, "\\u%04x", s[i]);
		i += l ? l : 1;
	}
	fputc('"', f);
}

const char *cli_json_q(const char *s)
{
	static char *ring[16];
	static unsigned next;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return "\"\"";
	cli_json_str(f, s, strlen(s));
	if (fclose(f) != 0) {
		free(buf);
		return "\"\"";
	}
	free(ring[next]);
	ring[next] = buf;
	next = (next + 1) % 16;
	return buf;
}
