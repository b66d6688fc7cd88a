/* The production backend: io_uring over an O_DIRECT file descriptor. */
#include "disk.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <liburing.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct disk_uring {
	struct node_disk d;
	struct io_uring ring;
	int fd;
	int cfd;         /* read-only, through the page cache; -1: none */
	bool ring_ready;
	unsigned queued; /* prepared, not yet submitted to the kernel */
};

static int ur_submit(struct node_disk *d, struct node_disk_io *io)
{
	struct disk_uring *u = (struct disk_uring *)d;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

	if (!sqe) {
		int ret = io_uring_submit(&u->ring);

		if (ret < 0)
			return ret;
		u->queued = 0;
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EBUSY;
	}
	switch (io->op) {
	case DISK_READ:
		/* registered file 1 is the page-cache descriptor */
		io_uring_prep_read(sqe, io->cached && u->cfd >= 0 ? 1 : 0, io->buf, io->len, io->off);
		break;
	case DISK_WRITE:
		io_uring_prep_write(sqe, 0, io->buf, io->len, io->off);
		break;
	case DISK_FLUSH:
		io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
		break;
	}
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, io);
	u->queued++;
	return 0;
}

static int ur_reap(struct node_disk *d, bool wait)
{
	struct disk_uring *u = (struct disk_uring *)d;
	struct io_uring_cqe *cqe = NULL;
	unsigned n = 0;
	int ret;

	if (u->queued || (wait && d->inflight)) {
		ret = io_uring_submit_and_wait(&u->ring, wait && d->inflight ? 1 : 0);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			return ret;
		if (ret >= 0)
			u->queued = 0;
	}
	/* done() may submit more work; each CQE is marked seen before it runs */
	while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
		struct node_disk_io *io = io_uring_cqe_get_data(cqe);

		io->res = cqe->res;
		io_uring_cqe_seen(&u->ring, cqe);
		d->inflight--;
		n++;
		io->done(io);
	}
	return (int)n;
}

static void ur_destroy(struct node_disk *d)
{
	struct disk_uring *u = (struct disk_uring *)d;

	while (d->inflight && ur_reap(d, true) >= 0)
		;
	if (u->ring_ready)
		io_uring_queue_exit(&u->ring);
	if (u->fd >= 0)
		close(u->fd);
	if (u->cfd >= 0)
		close(u->cfd);
	free(u);
}

static const struct node_disk_ops uring_ops = { ur_submit, ur_reap, ur_destroy, NULL };

static int ring_init(struct io_uring *ring, unsigned depth)
{
	struct io_uring_params p;
	int ret;

	/* Newer kernels: one issuer and deferred task work cut wake-ups. */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
	ret = io_uring_queue_init_params(depth, ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(depth, ring, &p);
	}
	return ret;
}

/*
 * The descriptor for cached reads: the same drive without O_DIRECT,
 * read-only, readahead off (a GET reads exactly what it needs). Direct
 * writes through the other descriptor invalidate the pages they cover, so
 * it sees them. -1 when it cannot be opened (then every read is direct).
 */
static int cached_open(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0)
		posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
	return fd;
}

/* Open (or create sparse) the drive with O_DIRECT; its size in *size. */
static int drive_open(const char *path, uint64_t create_size, int *fdp, uint64_t *size,
		      char *err, size_t errlen)
{
	int flags = O_RDWR | O_DIRECT | O_CLOEXEC, fd, ret = 0;
	struct stat st;

	*fdp = -1;
	fd = open(path, flags);
	if (fd < 0 && errno == ENOENT && create_size) {
		fd = open(path, flags | O_CREAT | O_EXCL, 0600);
		if (fd >= 0 && ftruncate(fd, (off_t)create_size) < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot size drive file '%s': %s", path, strerror(errno));
			close(fd);
			unlink(path);
			return ret;
		}
	}
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open drive '%s': %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot stat drive '%s': %s", path, strerror(errno));
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot get size of '%s': %s", path, strerror(errno));
		}
	} else if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
	} else {
		ret = -EINVAL;
		snprintf(err, errlen, "drive '%s' is neither a block device nor a file", path);
	}
	if (ret < 0) {
		close(fd);
		return ret;
	}
	*size &= ~(uint64_t)(DISK_BLOCK_BYTES - 1);
	*fdp = fd;
	return 0;
}

int node_disk_uring_open(struct node_disk **out, const char *path, unsigned depth,
			 uint64_t create_size, char *err, size_t errlen)
{
	struct disk_uring *u = NULL;
	int ret = 0;

	*out = NULL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	snprintf(u->d.name, sizeof(u->d.name), "%s", path);
	u->cfd = -1;
	ret = drive_open(path, create_size, &u->fd, &u->d.size, err, errlen);
	if (ret < 0)
		goto out;
	u->cfd = cached_open(path);
	ret = ring_init(&u->ring, depth);
	if (ret < 0) {
		snprintf(err, errlen, "cannot set up io_uring for '%s': %s", path, strerror(-ret));
		goto out;
	}
	u->ring_ready = true;
	{
		int fds[2] = { u->fd, u->cfd };

		ret = io_uring_register_files(&u->ring, fds, u->cfd >= 0 ? 2 : 1);
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot register '%s' with io_uring: %s", path, strerror(-ret));
		goto out;
	}
	u->d.ops = &uring_ops;
	*out = &u->d;
	u = NULL;
out:
	if (u)
		ur_destroy(&u->d);
	return ret;
}

/* ---- on a shared loop ---- */

struct disk_on_loop {
	struct node_disk d;
	struct node_loop *loop;
	int fd;
	int cfd; /* read-only, through the page cache; -1: none */
	bool direct;                      /* requests are done by reap, not the loop */
	struct node_disk_io *dq, *dq_tail; /* direct requests not yet done */
};

static void dl_complete(struct node_loop_ev *ev, int res, uint32_t flags)
{
	struct node_disk_io *io = (struct node_disk_io *)((char *)ev - offsetof(struct node_disk_io, ev));

	io->res = res;
	io->disk->inflight--;
	io->done(io);
}

static int dl_submit(struct node_disk *d, struct node_disk_io *io)
{
	struct disk_on_loop *dl = (struct disk_on_loop *)d;
	struct io_uring_sqe *sqe = NULL;

	io->ev.fn = dl_complete;
	io->disk = d;
	if (dl->direct) {
		io->next = NULL;
		if (dl->dq_tail)
			dl->dq_tail->next = io;
		else
			dl->dq = io;
		dl->dq_tail = io;
		return 0;
	}
	sqe = node_loop_sqe(dl->loop, &io->ev);
	if (!sqe)
		return -EBUSY;
	switch (io->op) {
	case DISK_READ:
		io_uring_prep_read(sqe, io->cached && dl->cfd >= 0 ? dl->cfd : dl->fd, io->buf, io->len,
				   io->off);
		break;
	case DISK_WRITE:
		io_uring_prep_write(sqe, dl->fd, io->buf, io->len, io->off);
		break;
	case DISK_FLUSH:
		io_uring_prep_fsync(sqe, dl->fd, IORING_FSYNC_DATASYNC);
		break;
	}
	io_uring_sqe_set_data(sqe, &io->ev);
	return 0;
}

/* One request, done now by this thread: bytes transferred or -errno. */
static int dl_do(struct disk_on_loop *dl, struct node_disk_io *io)
{
	int fd = io->op == DISK_READ && io->cached && dl->cfd >= 0 ? dl->cfd : dl->fd;
	size_t done = 0;

	if (io->op == DISK_FLUSH)
		return fdatasync(dl->fd) < 0 ? -errno : 0;
	while (done < io->len) {
		ssize_t n = io->op == DISK_READ
				    ? pread(fd, (char *)io->buf + done, io->len - done, (off_t)(io->off + done))
				    : pwrite(fd, (char *)io->buf + done, io->len - done, (off_t)(io->off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (int)done;
}

/* Only direct requests: the loop's owner delivers the others. */
static int dl_reap(struct node_disk *d, bool wait)
{
	struct disk_on_loop *dl = (struct disk_on_loop *)d;
	struct node_disk_io *io;
	int n = 0;

	/* done() may queue more; they are done in this call too */
	while ((io = dl->dq)) {
		dl->dq = io->next;
		if (!dl->dq)
			dl->dq_tail = NULL;
		io->res = dl_do(dl, io);
		d->inflight--;
		n++;
		io->done(io);
	}
	return n;
}

static int dl_direct(struct node_disk *d, bool on)
{
	struct disk_on_loop *dl = (struct disk_on_loop *)d;

	if (on && !dl->direct && d->inflight)
		return -EBUSY;
	assert(on || !dl->dq);
	dl->direct = on;
	return 0;
}

static void dl_destroy(struct node_disk *d)
{
	struct disk_on_loop *dl = (struct disk_on_loop *)d;

	dl_reap(d, true);
	/* a request in flight through the loop would complete into freed
	 * memory: the owner drains first (node_disk_loop_open()) */
	assert(!d->inflight);
	if (dl->fd >= 0)
		close(dl->fd);
	if (dl->cfd >= 0)
		close(dl->cfd);
	free(dl);
}

static const struct node_disk_ops loop_ops = { dl_submit, dl_reap, dl_destroy, dl_direct };

int node_disk_loop_open(struct node_disk **out, struct node_loop *loop, const char *path,
			uint64_t create_size, char *err, size_t errlen)
{
	struct disk_on_loop *dl = calloc(1, sizeof(*dl));
	int ret;

	*out = NULL;
	if (!dl)
		return -ENOMEM;
	snprintf(dl->d.name, sizeof(dl->d.name), "%s", path);
	dl->loop = loop;
	ret = drive_open(path, create_size, &dl->fd, &dl->d.size, err, errlen);
	if (ret < 0) {
		free(dl);
		return ret;
	}
	dl->cfd = cached_open(path);
	dl->d.ops = &loop_ops;
	*out = &dl->d;
	return 0;
}
