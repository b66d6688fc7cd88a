/* bench_cluster: a local cluster for a benchmark (see bench_cluster.h). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_cluster.h"

/* Run argv (NULL-terminated), its output appended to log (NULL: inherited).
 * 0, or -ECHILD when it failed. */
static int run(const char *log, char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (log) {
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
				close(fd);
			}
		}
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ECHILD;
}

static void tail_log(const char *path)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "tail -n 5 '%s' >&2", path);
	if (system(cmd) != 0)
		return;
}

int bench_cluster_init(struct bench_cluster *c, const char *base, const char *script)
{
	char exe[1024], need[1100];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	const char *env = getenv("SHELF_CLUSTER");
	char *abs;

	if (geteuid() != 0) {
		printf("shelf-bench %s: skipped: needs root (it creates network namespaces for a "
		       "local cluster)\n", c->tag);
		return 77;
	}
	if (n <= 0) {
		fprintf(stderr, "shelf-bench %s: cannot read /proc/self/exe\n", c->tag);
		return 1;
	}
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	snprintf(c->bin, sizeof(c->bin), "%s", exe);
	if (script)
		snprintf(c->script, sizeof(c->script), "%s", script);
	else if (env && *env)
		snprintf(c->script, sizeof(c->script), "%s", env);
	else {
		snprintf(c->script, sizeof(c->script), "%s/../tools/shelf-cluster", exe);
		if (access(c->script, X_OK) != 0)
			snprintf(c->script, sizeof(c->script), "tools/shelf-cluster");
	}
	if (access(c->script, X_OK) != 0) {
		fprintf(stderr, "shelf-bench %s: cannot find tools/shelf-cluster (give --cluster "
				"PATH or set SHELF_CLUSTER)\n", c->tag);
		return 1;
	}
	snprintf(need, sizeof(need), "%s/shelf-broker", c->bin);
	if (access(need, X_OK) != 0) {
		fprintf(stderr, "shelf-bench %s: needs shelf-node, shelf-broker and shelf built "
				"next to it, in %s\n", c->tag, c->bin);
		return 1;
	}
	mkdir(base, 0755);
	abs = realpath(base, NULL);
	if (!abs || strlen(abs) + strlen(c->tag) > sizeof(c->dir) - 16) {
		fprintf(stderr, "shelf-bench %s: cannot use '%s': %s\n", c->tag, base,
			abs ? "the path is too long" : strerror(errno));
		free(abs);
		return 1;
	}
	snprintf(c->dir, sizeof(c->dir), "%.900s/%.32s", abs, c->tag);
	free(abs);
	snprintf(c->cdir, sizeof(c->cdir), "%s/cluster", c->dir);
	snprintf(c->client, sizeof(c->client), "%s/broker/clients/bench", c->cdir);
	snprintf(c->nsp, sizeof(c->nsp), "sb%.2s%d", c->tag, (int)getpid());
	snprintf(c->log, sizeof(c->log), "%s/setup.log", c->dir);
	setenv("SHELF_CLUSTER_NS", c->nsp, 1);
	setenv("SHELF_BUILD", c->bin, 1);
	if (run(NULL, (char *[]){ "rm", "-rf", c->dir, NULL }) < 0 || mkdir(c->dir, 0755) < 0) {
		fprintf(stderr, "shelf-bench %s: cannot create %s\n", c->tag, c->dir);
		return 1;
	}
	return 0;
}

/* Wait until every node logged its address in slice (60 s at most). */
static int wait_slice(const struct bench_cluster *c, const char *slice)
{
	char needle[128], path[PATH_MAX + 16], line[512];

	snprintf(needle, sizeof(needle), "slice '%s': address ", slice);
	for (int t = 0; t < 600; t++) {
		int have = 0;

		for (int i = 1; i <= c->nodes; i++) {
			FILE *f;

			snprintf(path, sizeof(path), "%s/n%02d/log", c->cdir, i);
			f = fopen(path, "r");
			if (!f)
				continue;
			while (fgets(line, sizeof(line), f))
				if (strstr(line, needle)) {
					have++;
					break;
				}
			fclose(f);
		}
		if (have == c->nodes)
			return 0;
		usleep(100000);
	}
	return -ETIMEDOUT;
}

int bench_cluster_up(struct bench_cluster *c)
{
	char n[16], ch[16], r[16], path[PATH_MAX + 32];
	int ret;

	snprintf(n, sizeof(n), "%d", c->nodes);
	snprintf(ch, sizeof(ch), "%d", c->chassis);
	snprintf(r, sizeof(r), "%d", c->replicas);
	fprintf(stderr, "%s: %d nodes over %d chassis, R=%d, in %s (namespaces %s-*)\n", c->tag,
		c->nodes, c->chassis, c->replicas, c->cdir, c->nsp);
	c->up = true; /* from here on, whatever happens, the cluster goes down */
	ret = run(c->log, (char *[]){ c->script, "up", "--dir", c->cdir, "--nodes", n, "--chassis",
				      ch, "--replicas", r, "--drive-size", (char *)c->drive_size,
				      NULL });
	snprintf(path, sizeof(path), "%s/broker", c->cdir);
	if (ret == 0)
		ret = run(c->log, (char *[]){ c->script, "exec", "--dir", c->cdir, "--",
					      "shelf-broker", "client", "--dir", path, "--name",
					      "bench", "--slices", "default,system", NULL });
	if (ret == 0 && (ret = wait_slice(c, "default")) < 0)
		fprintf(stderr, "%s: not every node joined slice 'default' within 60 s\n", c->tag);
	if (ret < 0) {
		fprintf(stderr, "%s: cannot bring the cluster up; the end of %s:\n", c->tag, c->log);
		tail_log(c->log);
	}
	return ret;
}

int bench_cluster_enter(const struct bench_cluster *c)
{
	char path[PATH_MAX];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "/run/netns/%s-bp", c->nsp);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
		ret = -errno;
		fprintf(stderr, "%s: cannot enter namespace '%s': %s\n", c->tag, path,
			strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

int bench_cluster_exec(const struct bench_cluster *c, char *const argv[])
{
	char *full[32] = { (char *)c->script, "exec", "--dir", (char *)c->cdir, "--" };
	int n = 5;

	for (int i = 0; argv[i] && n < 31; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	return run(c->log, full);
}

int bench_cluster_kill(const struct bench_cluster *c, int node)
{
	char name[16];

	snprintf(name, sizeof(name), "%d", node);
	return run("/dev/null", (char *[]){ (char *)c->script, "kill", "--dir", (char *)c->cdir,
					     name, NULL });
}

void bench_cluster_down(struct bench_cluster *c)
{
	if (!c->up)
		return;
	c->up = false;
	if (run(c->log, (char *[]){ c->script, "down", "--dir", c->cdir, c->keep ? NULL : "--wipe",
				    NULL }) < 0)
		fprintf(stderr, "shelf-bench %s: 'shelf-cluster down' failed; see %s\n", c->tag,
			c->log);
	else if (c->keep)
		fprintf(stderr, "%s: cluster down, its directory kept: %s\n", c->tag, c->dir);
	else
		run(NULL, (char *[]){ "rm", "-rf", c->dir, NULL });
}

static volatile sig_atomic_t child_pid;

static void on_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

int bench_cluster_child(int (*fn)(void *arg), void *arg)
{
	struct sigaction sa = { .sa_handler = on_signal }, oint, oterm;
	pid_t pid;
	int st = 0;

	fflush(NULL);
	sigaction(SIGINT, &sa, &oint);
	sigaction(SIGTERM, &sa, &oterm);
	pid = fork();
	if (pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		_exit(fn(arg));
	}
	child_pid = pid;
	while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	child_pid = 0;
	sigaction(SIGINT, &oint, NULL);
	sigaction(SIGTERM, &oterm, NULL);
	if (pid < 0)
		return 1;
	if (WIFSIGNALED(st))
		fprintf(stderr, "shelf-bench: the client died of signal %d\n", WTERMSIG(st));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
