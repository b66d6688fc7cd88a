/*
 * ovl_board: board profiles.
 *
 * A board profile describes the hardware a node runs on: its drive, data
 * interface, memory budget, io_uring depth, failure domain and power hooks.
 * Profiles live in boards/<name>/board.conf as `key = value` lines and are
 * validated by the same table machinery as every other configuration.
 *
 * Search order for <name>: the directory given to ovl_board_load(), then
 * $SHELF_BOARDS, then ./boards, then the installed share/shelf/boards.
 */
#ifndef OVL_BOARD_H
#define OVL_BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ovl_conf.h"

#define OVL_BOARD_NAME_MAX 32
#define OVL_BOARD_PATH_MAX 256

struct ovl_board {
	char name[OVL_BOARD_NAME_MAX];
	char description[128];
	char drive[OVL_BOARD_PATH_MAX]; /* block device or file; relative = under the state dir */
	bool drive_is_file;             /* create the drive file (sparse) if it is missing */
	uint64_t drive_size;            /* size of a created drive file, bytes */
	uint64_t segment_size;          /* store segment size, bytes */
	char interface[32];             /* data-plane interface for slice addresses */
	uint64_t memory_budget;         /* RSS the node must stay within, bytes */
	int64_t ring_depth;             /* io_uring submission queue entries */
	int64_t write_buffers;          /* store write buffers in flight */
	bool page_cache_reads;          /* GETs through the kernel's page cache */
	uint64_t write_buffer_size;     /* bytes per store write buffer */
	char site[64];                  /* failure domain: site, chassis, slot */
	char chassis[64];
	char slot[32];
	char power_on[OVL_BOARD_PATH_MAX];  /* command run to power the drive up */
	char power_off[OVL_BOARD_PATH_MAX]; /* command run before power-down */
	/* fleet updates on a board with its own updater (empty: the sim
	 * board's A/B slot directories under shelf-boot); see boards/README */
	char update_install[OVL_BOARD_PATH_MAX];   /* installs an image: {bundle} = its payload file */
	char update_mark_good[OVL_BOARD_PATH_MAX]; /* marks the running slot good */
	char reboot[OVL_BOARD_PATH_MAX];           /* restarts into the newly installed slot */
};

/* The table of board keys, for help output and tools. */
extern const struct ovl_conf_item ovl_board_conf[];

/*
 * Load board `name`, searching `dir` first when it is not NULL. The name must
 * be [a-z0-9_-]{1,31}. Returns 0, -ENOENT when no profile is found, or another
 * -errno for an invalid profile; `err` names the file, line and key.
 */
int ovl_board_load(struct ovl_board *b, const char *name, const char *dir,
		   char *err, size_t errlen);

/* Write the directory holding board `name` into `out`, or -ENOENT. */
int ovl_board_find(const char *name, const char *dir, char *out, size_t outlen);

#endif
