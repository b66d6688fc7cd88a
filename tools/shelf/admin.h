/* admin.h: the shelf CLI's broker administration commands (admin.c). */
#ifndef SHELF_CLI_ADMIN_H
#define SHELF_CLI_ADMIN_H

int cmd_image_build(int argc, char **argv); /* image.c */
int cmd_image_show(int argc, char **argv);  /* image.c */
int cmd_slices(int argc, char **argv);
int cmd_slice_create(int argc, char **argv);
int cmd_slice_rm(int argc, char **argv);
int cmd_slice_show(int argc, char **argv);
int cmd_nodes(int argc, char **argv);
int cmd_node_revoke(int argc, char **argv);
int cmd_broker_stats(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_repair(int argc, char **argv); /* repair.c */
int cmd_fleet(int argc, char **argv);  /* fleet.c */

#include "overlay.h"

/* One admin request and its reply (admin_query()). */
struct admin_call {
	void *ctx;
	ovl_link_client_t *cl;
	uint8_t *buf;
	struct ovl_msg reply;
};

/*
 * Send req to the broker's admin interface with the admin identity in dir
 * (admin.key, broker.pub) and wait up to timeout_ms for each step. Returns
 * 0 with a->reply (release with admin_call_release()), or an exit code (1
 * failed, 3 not found) with the reason in err and nothing to release.
 */
int admin_query(const char *broker, const char *dir, int timeout_ms, struct ovl_msg *req,
		struct admin_call *a, char *err, size_t errlen);
void admin_call_release(struct admin_call *a);

#endif
