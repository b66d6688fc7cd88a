/* The backend-independent parts of the disk seam, the clock and the RNG. */
#include "disk.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "ovl_util.h"

int node_disk_reap(struct node_disk *d, bool wait)
{
	return d->ops->reap(d, wait);
}

int node_disk_direct(struct node_disk *d, bool on)
{
	return d->ops->direct ? d->ops->direct(d, on) : 0;
}

void node_disk_destroy(struct node_disk **d)
{
	if (!d || !*d)
		return;
	(*d)->ops->destroy(*d);
	*d = NULL;
}

static void sync_done(struct node_disk_io *io)
{
	*(bool *)io->arg = true;
}

int node_disk_sync_io(struct node_disk *d, enum node_disk_op op, void *buf, size_t len,
		      uint64_t off)
{
	bool finished = false;
	struct node_disk_io io = {
		.op = op, .buf = buf, .len = len, .off = off, .done = sync_done, .arg = &finished,
	};
	int ret = node_disk_submit(d, &io);

	if (ret < 0)
		return ret;
	while (!finished) {
		ret = node_disk_reap(d, true);
		if (ret < 0)
			return ret;
	}
	if (io.res < 0)
		return io.res;
	if (op != DISK_FLUSH && (size_t)io.res != len)
		return -EIO;
	return 0;
}

static uint64_t sys_now_ns(void *arg)
{
	return ovl_mono_ns();
}

static uint64_t sys_wall_s(void *arg)
{
	return (uint64_t)time(NULL);
}

const struct node_clock node_clock_system = { sys_now_ns, sys_wall_s, NULL };

void node_rng_seed(struct node_rng *r, uint64_t seed)
{
	/* splitmix64 to spread the seed */
	for (int i = 0; i < 2; i++) {
		uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		r->s[i] = z ^ (z >> 31);
	}
	if (!r->s[0] && !r->s[1])
		r->s[0] = 1;
}

uint64_t node_rng_next(struct node_rng *r)
{
	uint64_t a = r->s[0], b = r->s[1];

	r->s[0] = b;
	a ^= a << 23;
	r->s[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
	return r->s[1] + b;
}

uint64_t node_rng_below(struct node_rng *r, uint64_t n)
{
	return n ? node_rng_next(r) % n : 0;
}
