#include "ovl_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* The process-wide log configuration: one log per process, by design. */
static struct {
	char ident[32];
	enum ovl_log_level level;
	bool use_syslog;
	ovl_log_sink_fn sink;
	void *sink_arg;
} log_cfg = { "shelf", OVL_LOG_INFO, false, NULL, NULL };

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void ovl_log_open(const char *ident, enum ovl_log_level level, bool use_syslog)
{
	snprintf(log_cfg.ident, sizeof(log_cfg.ident), "%s", ident ? ident : "shelf");
	log_cfg.level = level;
	log_cfg.use_syslog = use_syslog;
	if (use_syslog)
		openlog(log_cfg.ident, LOG_PID, LOG_DAEMON);
}

void ovl_log_set_sink(ovl_log_sink_fn fn, void *arg)
{
	log_cfg.sink = fn;
	log_cfg.sink_arg = arg;
}

void ovl_log_set_level(enum ovl_log_level level)
{
	log_cfg.level = level;
}

bool ovl_log_enabled(enum ovl_log_level level)
{
	return level <= log_cfg.level;
}

int ovl_log_level_parse(const char *s, enum ovl_log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum ovl_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void ovl_log_vwrite(enum ovl_log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[1024];
	struct timespec ts;
	struct tm tm;

	if ((unsigned)level > OVL_LOG_DEBUG)
		level = OVL_LOG_DEBUG;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_cfg.sink) {
		log_cfg.sink(log_cfg.sink_arg, level, line);
		return;
	}
	if (log_cfg.use_syslog) {
		syslog(prio[level], "%s", line);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: %s\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		tm.tm_sec, ts.tv_nsec / 1000000, log_cfg.ident, (int)getpid(),
		level_names[level], line);
}

void ovl_log_write(enum ovl_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ovl_log_vwrite(level, fmt, ap);
	va_end(ap);
}
