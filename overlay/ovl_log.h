/*
 * ovl_log: the one logging module of every shelf daemon.
 *
 * Levels are checked before the arguments are formatted (ovl_log() is a
 * macro around ovl_log_enabled()). Output goes to stderr, or to syslog after
 * ovl_log_open(..., true), or to a sink set by tests so they can assert on
 * what was logged. Library code does not log: it returns -errno and fills an
 * error buffer; only daemons and tools call these.
 */
#ifndef OVL_LOG_H
#define OVL_LOG_H

#include <stdbool.h>
#include <stdarg.h>

enum ovl_log_level {
	OVL_LOG_ERR = 0,
	OVL_LOG_WARN = 1,
	OVL_LOG_INFO = 2,
	OVL_LOG_DEBUG = 3,
};

/* A test sink: receives every enabled line, already formatted, no newline. */
typedef void (*ovl_log_sink_fn)(void *arg, enum ovl_log_level level, const char *line);

/* Name the process in log lines, choose the level and stderr or syslog. */
void ovl_log_open(const char *ident, enum ovl_log_level level, bool use_syslog);

/* Replace the output with `fn` (NULL restores stderr/syslog). */
void ovl_log_set_sink(ovl_log_sink_fn fn, void *arg);

void ovl_log_set_level(enum ovl_log_level level);
bool ovl_log_enabled(enum ovl_log_level level);

/* Parse "error", "warn", "info" or "debug". Returns 0 or -EINVAL. */
int ovl_log_level_parse(const char *s, enum ovl_log_level *out);

void ovl_log_write(enum ovl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void ovl_log_vwrite(enum ovl_log_level level, const char *fmt, va_list ap);

#define ovl_log(level, ...)                                                    \
	do {                                                                   \
		if (ovl_log_enabled(level))                                    \
			ovl_log_write(level, __VA_ARGS__);                     \
	} while (0)

#define ovl_err(...) ovl_log(OVL_LOG_ERR, __VA_ARGS__)
#define ovl_warn(...) ovl_log(OVL_LOG_WARN, __VA_ARGS__)
#define ovl_info(...) ovl_log(OVL_LOG_INFO, __VA_ARGS__)
#define ovl_debug(...) ovl_log(OVL_LOG_DEBUG, __VA_ARGS__)

#endif
