#include "ovl_board.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SHELF_BOARD_DIR
#define SHELF_BOARD_DIR "/usr/local/share/shelf/boards"
#endif

#define B(f) offsetof(struct ovl_board, f)
#define BS(f) sizeof(((struct ovl_board *)0)->f)

const struct ovl_conf_item ovl_board_conf[] = {
	{ "name", OVL_CONF_STR, "", B(name), BS(name), 0, 0, "board name" },
	{ "description", OVL_CONF_STR, "", B(description), BS(description), 0, 0,
	  "one line describing the hardware" },
	{ "drive", OVL_CONF_STR, "", B(drive), BS(drive), 0, 0,
	  "the drive: a block device, or a file (relative paths are under the state dir)" },
	{ "drive_is_file", OVL_CONF_BOOL, "false", B(drive_is_file), 0, 0, 0,
	  "the drive is a file, created sparse with drive_size on first start" },
	{ "drive_size", OVL_CONF_SIZE, "1G", B(drive_size), 0, 16 << 20, INT64_MAX,
	  "size of a drive file created on first start" },
	{ "segment_size", OVL_CONF_SIZE, "256M", B(segment_size), 0, 1 << 20, 1LL << 32,
	  "store segment size (power of two)" },
	{ "interface", OVL_CONF_STR, "eth0", B(interface), BS(interface), 0, 0,
	  "network interface that carries the slice addresses" },
	{ "memory_budget", OVL_CONF_SIZE, "64M", B(memory_budget), 0, 8 << 20, INT64_MAX,
	  "resident memory the node must stay within" },
	{ "ring_depth", OVL_CONF_INT, "256", B(ring_depth), 0, 8, 32768,
	  "io_uring submission queue depth" },
	{ "write_buffers", OVL_CONF_INT, "16", B(write_buffers), 0, 2, 1024,
	  "store write buffers that may be in flight" },
	{ "write_buffer_size", OVL_CONF_SIZE, "256K", B(write_buffer_size), 0, 4096, 64 << 20,
	  "bytes per store write buffer (multiple of 4K)" },
	{ "page_cache_reads", OVL_CONF_BOOL, "true", B(page_cache_reads), 0, 0, 0,
	  "GETs may be answered from the kernel's page cache (reclaimable, outside the node's RSS)" },
	{ "site", OVL_CONF_STR, "site0", B(site), BS(site), 0, 0, "failure domain: site" },
	{ "chassis", OVL_CONF_STR, "chassis0", B(chassis), BS(chassis), 0, 0,
	  "failure domain: chassis" },
	{ "slot", OVL_CONF_STR, "0", B(slot), BS(slot), 0, 0, "failure domain: slot" },
	{ "power_on", OVL_CONF_STR, "", B(power_on), BS(power_on), 0, 0,
	  "command that powers the drive up (empty: none)" },
	{ "power_off", OVL_CONF_STR, "", B(power_off), BS(power_off), 0, 0,
	  "command run before the drive is powered down (empty: none)" },
	{ "update_install", OVL_CONF_STR, "", B(update_install), BS(update_install), 0, 0,
	  "command that installs a verified image into the inactive slot, {bundle} replaced by the "
	  "payload's path (empty: the sim board's slot directories)" },
	{ "update_mark_good", OVL_CONF_STR, "", B(update_mark_good), BS(update_mark_good), 0, 0,
	  "command that marks the running slot good once the health gate passed (empty: the boot state)" },
	{ "reboot", OVL_CONF_STR, "", B(reboot), BS(reboot), 0, 0,
	  "command that restarts the board into the newly installed slot (empty: exit 75 to shelf-boot)" },
	OVL_CONF_END
};

static bool valid_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= OVL_BOARD_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* <dir of the running binary>/../boards: a build tree next to its sources */
static void exe_boards(char *out, size_t len)
{
	char exe[400];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	out[0] = '\0';
	if (n <= 0)
		return;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return;
	*slash = '\0';
	snprintf(out, len, "%s/../boards", exe);
}

int ovl_board_find(const char *name, const char *dir, char *out, size_t outlen)
{
	char near_exe[440];
	const char *roots[5] = { dir, getenv("SHELF_BOARDS"), "boards", near_exe, SHELF_BOARD_DIR };

	if (!valid_name(name))
		return -EINVAL;
	exe_boards(near_exe, sizeof(near_exe));
	for (unsigned i = 0; i < 5; i++) {
		char path[512];

		if (!roots[i] || !*roots[i])
			continue;
		snprintf(path, sizeof(path), "%s/%s/board.conf", roots[i], name);
		if (access(path, R_OK) == 0) {
			snprintf(out, outlen, "%s/%s", roots[i], name);
			return 0;
		}
	}
	return -ENOENT;
}

int ovl_board_load(struct ovl_board *b, const char *name, const char *dir,
		   char *err, size_t errlen)
{
	char bdir[400], path[512];
	int ret;

	memset(b, 0, sizeof(*b));
	if (!valid_name(name)) {
		snprintf(err, errlen, "board name '%s' is not valid (use a-z, 0-9, - and _)", name);
		return -EINVAL;
	}
	ret = ovl_board_find(name, dir, bdir, sizeof(bdir));
	if (ret < 0) {
		snprintf(err, errlen, "board '%s' not found (looked in %s%s$SHELF_BOARDS, ./boards, the build tree, %s)",
			 name, dir ? dir : "", dir ? ", " : "", SHELF_BOARD_DIR);
		return ret;
	}
	ret = ovl_conf_defaults(ovl_board_conf, b, err, errlen);
	if (ret < 0)
		return ret;
	snprintf(path, sizeof(path), "%s/board.conf", bdir);
	ret = ovl_conf_load_file(ovl_board_conf, b, path, err, errlen);
	if (ret < 0)
		return ret;
	if (strcmp(b->name, name) != 0) {
		snprintf(err, errlen, "%s: key 'name' is '%s', expected '%s'", path, b->name, name);
		return -EINVAL;
	}
	if (!*b->drive) {
		snprintf(err, errlen, "%s: key 'drive' is required", path);
		return -EINVAL;
	}
	if (b->segment_size & (b->segment_size - 1)) {
		snprintf(err, errlen, "%s: key 'segment_size' must be a power of two", path);
		return -EINVAL;
	}
	if (b->write_buffer_size % 4096) {
		snprintf(err, errlen, "%s: key 'write_buffer_size' must be a multiple of 4K", path);
		return -EINVAL;
	}
	if (b->drive_is_file && b->drive_size < 4 * b->segment_size) {
		snprintf(err, errlen, "%s: key 'drive_size' must hold at least 4 segments (%llu bytes)",
			 path, (unsigned long long)(4 * b->segment_size));
		return -EINVAL;
	}
	return 0;
}
