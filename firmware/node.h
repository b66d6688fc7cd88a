/*
 * node.h: the public interface of libshelf-node, the per-drive daemon's
 * modules, for the daemon itself, tools and tests. Other folders include
 * only this file.
 */
#ifndef SHELF_NODE_H
#define SHELF_NODE_H

#include "loop/loop.h"
#include "serve/serve.h"
#include "req/req.h"
#include "dp/dp.h"
#include "peer/peer.h"
#include "repl/repl.h"
#include "store/disk.h"
#include "store/store.h"
#include "ctl/ctl.h"
#include "update/update.h"
#include "boot/bootstate.h"
#include "update/gate.h"

#endif
