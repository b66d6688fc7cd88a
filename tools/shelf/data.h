/* data.h: the shelf CLI's object commands (data.c), through libshelf. */
#ifndef SHELF_CLI_DATA_H
#define SHELF_CLI_DATA_H

int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_stat(int argc, char **argv);

struct shelf;
/*
 * Open a libshelf client as every command does: broker "none" means no
 * broker; nodes[0..nnodes) (else $SHELF_NODES) are asked for maps when no
 * broker answers; timeout_ms 0 keeps the default. Prints what failed and
 * returns an exit code (0 ok, 1 failed, 2 usage).
 */
int shelf_cli_open(const char *cmd, const char *client, const char *broker,
		   const char *const *nodes, int nnodes, int timeout_ms, struct shelf **s);

#endif
