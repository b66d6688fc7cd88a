/* admin.h: the shelf CLI's broker administration commands (admin.c). */
#ifndef SHELF_CLI_ADMIN_H
#define SHELF_CLI_ADMIN_H

int cmd_slices(int argc, char **argv);
int cmd_slice_create(int argc, char **argv);
int cmd_slice_rm(int argc, char **argv);
int cmd_slice_show(int argc, char **argv);
int cmd_nodes(int argc, char **argv);
int cmd_node_revoke(int argc, char **argv);
int cmd_broker_stats(int argc, char **argv);

#endif
