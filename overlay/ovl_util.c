/* ovl_util: see ovl_util.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ovl_util.h"

int ovl_file_write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ovl_file_sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = NULL;
	int fd = -1, ret = 0;

	if (!slash)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, (size_t)(slash - path));
	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return ret;
}

int ovl_file_write_atomic(const char *path, const void *buf, size_t len, unsigned mode,
			  char *err, size_t errlen)
{
	char *tmp = NULL;
	int fd = -1, ret = 0;

	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
		tmp = NULL;
		ret = -ENOMEM;
		snprintf(err, errlen, "cannot write '%s': %s", path, strerror(-ret));
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create a temporary file for '%s': %s", path,
			 strerror(-ret));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	if (fchmod(fd, (mode_t)mode) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot set the mode of '%s': %s", tmp, strerror(-ret));
		goto out;
	}
	ret = ovl_file_write_full(fd, buf, len);
	if (ret < 0) {
		snprintf(err, errlen, "cannot write '%s': %s", tmp, strerror(-ret));
		goto out;
	}
	if (fsync(fd) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot sync '%s': %s", tmp, strerror(-ret));
		goto out;
	}
	ret = close(fd) < 0 ? -errno : 0;
	fd = -1;
	if (ret < 0) {
		snprintf(err, errlen, "cannot close '%s': %s", tmp, strerror(-ret));
		goto out;
	}
	if (rename(tmp, path) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot rename '%s' to '%s': %s", tmp, path, strerror(-ret));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	ret = ovl_file_sync_parent(path);
	if (ret < 0)
		snprintf(err, errlen, "cannot sync the folder of '%s': %s", path, strerror(-ret));
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	return ret;
}

void ovl_hex_encode(const void *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = in;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ovl_hex_decode(const char *s, void *out, size_t n)
{
	uint8_t *o = out;

	/* check every digit first, so that a bad string leaves out unchanged */
	for (size_t i = 0; i < 2 * n; i++)
		if (hex_digit(s[i]) < 0)
			return -EINVAL;
	for (size_t i = 0; i < n; i++)
		o[i] = (uint8_t)(hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]));
	return 0;
}

bool ovl_mem_is_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t acc = 0;

	for (size_t i = 0; i < n; i++)
		acc |= b[i];
	return acc == 0;
}

uint64_t ovl_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ovl_mono_ms(void)
{
	return ovl_mono_ns() / 1000000u;
}
