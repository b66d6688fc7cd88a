/* data.h: the shelf CLI's object commands (data.c), through libshelf. */
#ifndef SHELF_CLI_DATA_H
#define SHELF_CLI_DATA_H

int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_stat(int argc, char **argv);

#endif
