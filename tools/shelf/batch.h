/* batch.h: `shelf get --batch` (batch.c), many objects through shelf_get_batch(). */
#ifndef SHELF_CLI_BATCH_H
#define SHELF_CLI_BATCH_H

#include <stdbool.h>

/* Whether argv asks for `get --batch`. */
bool cli_get_is_batch(int argc, char **argv);

/* `shelf get --batch LISTFILE (--out DIR | --tar FILE)`: the exit code. */
int cmd_get_batch(int argc, char **argv);

#endif
