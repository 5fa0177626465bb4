#ifndef OUTPOST_OUTPOST_H
#define OUTPOST_OUTPOST_H
/* Outpost's C API: the C++ API (outpost/outpost.hpp) over opaque handles, for
 * hosts in C, Go, Rust or Python. Nothing is thrown across it: each call
 * returns an outpost_code, and a failed call that takes `char** error` stores
 * there (when it is not NULL) a message naming what and where.
 *
 * Ownership of memory, everywhere:
 *   - a `const char*` or array the host passes is the host's, read during the
 *     call only;
 *   - a `const char*` or array the library passes to a callback is the
 *     library's, valid during that callback only;
 *   - a `char*` the library returns, or stores through `char** error`, is the
 *     host's: release it with outpost_free().
 * Threads: every function may be called from any thread, concurrently, except
 * outpost_agent_destroy() (once, when no other call on the agent is running).
 */

#include <stddef.h>
#include <stdint.h>

#include "outpost/export.hpp"

#ifdef __cplusplus
extern "C" {
#endif

/* The same codes, with the same values, as outpost::Errc. */
typedef enum outpost_code {
  OUTPOST_OK = 0,
  OUTPOST_INVALID_CONFIG,  /* the configuration, or a query in it, was refused */
  OUTPOST_INVALID_QUERY,   /* the VQL, artifact or a parameter was refused */
  OUTPOST_QUERY_FAILED,    /* the query failed while it ran */
  OUTPOST_IO,              /* the buffer or the log file could not be opened */
  OUTPOST_ALREADY_STARTED, /* an agent runs once */
  OUTPOST_TIMEOUT,         /* stop(): the ordered shutdown was forced */
  OUTPOST_FAILED,          /* the agent ended after a failure; or a bug (the message says) */
  OUTPOST_WOULD_BLOCK,     /* push: the buffer is at its limit; wait_writable says when to push again */
  OUTPOST_UNKNOWN_QUERY,   /* push, wait_writable: no query of that name has a host source */
  OUTPOST_NOT_RUNNING,     /* push, wait_writable: the agent is not running */
  OUTPOST_TOO_LARGE,       /* push: the row alone is bigger than a record may be */
  OUTPOST_INVALID_ARGUMENT /* a NULL handle or string, or a row that is not a flat JSON object */
} outpost_code;

/* The code's name ("ok", "would_block", ...): a static string. */
OUTPOST_API const char* outpost_code_name(outpost_code code);
/* Releases what the library handed to the host (NULL is fine). */
OUTPOST_API void outpost_free(void* p);

typedef struct outpost_agent outpost_agent;
typedef struct outpost_ack outpost_ack;

/* One record of the buffer, as the sink receives it (outpost::SinkRecord). */
typedef struct outpost_record {
  uint64_t seq;      /* its place in its lane: increasing, never reused */
  uint64_t query_id; /* the query that made it */
  uint64_t rows;     /* its rows; 0 for a record that is not rows */
  const char* json;  /* JSON lines, one per row, NUL-terminated */
  size_t json_len;
} outpost_record;

/* The link, with `link: host`: a batch of one lane in seq order, on the
 * agent's link thread (it may block). `ack` is the host's: pass it to
 * outpost_ack_send() once the batch is stored (now or later, from any
 * thread), or to outpost_ack_drop() (the batch comes again at the next
 * start). Exactly one of the two, once. */
typedef void (*outpost_sink_fn)(void* user, const char* lane, const outpost_record* records, size_t count,
                                outpost_ack* ack);
/* A log line at or above the agent's level: 0 trace, 1 debug, 2 info, 3 warn,
 * 4 error, 5 critical; on the thread that logs; it must not call the agent. */
typedef void (*outpost_log_fn)(void* user, int level, int64_t time_ns, const char* message);
/* A host query that answered would_block takes rows again; on an agent thread. */
typedef void (*outpost_writable_fn)(void* user, const char* query);
/* A row of a one-shot query, as a JSON object; return 0 to end the query. */
typedef int (*outpost_row_fn)(void* user, const char* json);

/* --- The host's own VQL plugins and functions (outpost/plugins.hpp) ------
 * Each callback runs on the thread running its query (one of the agent's,
 * or the host's inside outpost_agent_query), one call at a time per stream;
 * the streams of different queries run at once. None may call the agent. */

/* One call of a plugin or function, valid during the callback it is given to. */
typedef struct outpost_call outpost_call;
/* Wakes a parked stream: any thread, until the stream's close returns. */
typedef struct outpost_waker outpost_waker;

/* In a plugin's next: appends a row, a flat JSON object as
 * outpost_agent_push_json takes. OUTPOST_OK, or OUTPOST_INVALID_ARGUMENT
 * (the row was not taken; *error says why). */
OUTPOST_API outpost_code outpost_call_add_row(outpost_call* call, const char* row, char** error);
/* In a function's call: its value, one JSON value (null, true, false, a
 * number or a string). Not set: NULL. OUTPOST_OK or OUTPOST_INVALID_ARGUMENT. */
OUTPOST_API outpost_code outpost_call_set_result(outpost_call* call, const char* value, char** error);
/* Says why the callback fails (the query's error names the plugin); the
 * callback then returns its failure (OUTPOST_STEP_FAILED, or nonzero). */
OUTPOST_API void outpost_call_fail(outpost_call* call, const char* message);
OUTPOST_API void outpost_waker_wake(const outpost_waker* waker);

/* What a plugin's next says after a slice (as outpost::PluginStep). */
typedef enum outpost_step {
  OUTPOST_STEP_MORE = 0, /* call again at once */
  OUTPOST_STEP_WAIT,     /* call again after *wait_ms */
  OUTPOST_STEP_PARKED,   /* call again once the waker was woken */
  OUTPOST_STEP_DONE,     /* no more rows */
  OUTPOST_STEP_FAILED    /* the query fails (outpost_call_fail says why) */
} outpost_step;

typedef struct outpost_argument {
  const char* name;        /* "*": any name goes */
  const char* type;        /* as shown to users: "string", "int"... (may be NULL) */
  int required;
  const char* description; /* may be NULL */
} outpost_argument;

/* A plugin: SELECT * FROM name(arg=...). `args_json` is the call's arguments
 * as one JSON object. open makes the call's state (*stream, the host's) and
 * returns 0, or nonzero to fail the query; next appends up to `budget` rows
 * after a bounded slice of work (it must not block); close releases the
 * state (also after a failure of next; not after one of open). */
typedef struct outpost_plugin {
  const char* name;
  const char* description;
  const outpost_argument* args;
  size_t arg_count;
  int event; /* its rows never end by themselves */
  int (*open)(void* user, const char* args_json, const outpost_waker* waker, outpost_call* call, void** stream);
  outpost_step (*next)(void* user, void* stream, outpost_call* call, size_t budget, int64_t* wait_ms);
  void (*close)(void* user, void* stream);
  void* user;
} outpost_plugin;

/* A function: name(arg=...) in an expression, once per row. Returns 0 (its
 * value set by outpost_call_set_result), or nonzero to fail the query. */
typedef struct outpost_function {
  const char* name;
  const char* description;
  const outpost_argument* args;
  size_t arg_count;
  int (*call)(void* user, const char* args_json, outpost_call* call);
  void* user;
} outpost_function;

typedef struct outpost_options {
  const char* config_yaml;         /* as outpost-agent's --config file; NULL or "": the built-in one */
  const char* origin;              /* names the configuration in errors; NULL: "configuration" */
  const char* const* overrides;    /* "key=value" each, as outpost-agent's --set */
  size_t override_count;
  outpost_sink_fn sink;            /* the link, when the configuration says `link: host` */
  void* sink_user;
  outpost_log_fn log;              /* NULL: stderr */
  void* log_user;
  outpost_writable_fn on_writable; /* may be NULL */
  void* writable_user;
  unsigned worker_threads;         /* 0: one per core, at least 2 */
  const outpost_plugin* plugins;   /* the host's VQL plugins (copied; each `user` must outlive the agent) */
  size_t plugin_count;
  const outpost_function* functions; /* the host's VQL functions (the same) */
  size_t function_count;
} outpost_options;

/* Makes an agent from `options` (copied; checked by start). *agent is the
 * host's: release it with outpost_agent_destroy(). OUTPOST_INVALID_ARGUMENT:
 * a NULL pointer, or a plugin or function without a name or a callback it
 * needs (open and next; call). */
OUTPOST_API outpost_code outpost_agent_create(const outpost_options* options, outpost_agent** agent);
/* Stops the agent (30 s deadline) unless stopped, and releases it. Not from
 * a callback of this agent. */
OUTPOST_API void outpost_agent_destroy(outpost_agent* agent);

/* As outpost::Agent's start, stop, request_stop and wait. */
OUTPOST_API outpost_code outpost_agent_start(outpost_agent* agent, char** error);
OUTPOST_API outpost_code outpost_agent_stop(outpost_agent* agent, int64_t deadline_ms, char** error);
OUTPOST_API void outpost_agent_request_stop(outpost_agent* agent);
OUTPOST_API outpost_code outpost_agent_wait(outpost_agent* agent, char** error);

/* The agent's actors as a JSON array ("[]" when not running); the host's. */
OUTPOST_API char* outpost_agent_status_json(outpost_agent* agent);

/* Runs VQL once on the calling thread, each row to on_row, until it ends,
 * max_rows (0: no limit) or on_row returns 0. */
OUTPOST_API outpost_code outpost_agent_query(outpost_agent* agent, const char* vql, outpost_row_fn on_row, void* user,
                                             uint64_t max_rows, char** error);

/* Hands a row to the query `query` (source: {type: host}): a flat JSON object
 * whose members are the columns, in order; values null, true, false, numbers
 * (integers stay exact) or strings. OUTPOST_OK, OUTPOST_WOULD_BLOCK (the
 * buffer is at its limit: the row was not taken), or another code. */
OUTPOST_API outpost_code outpost_agent_push_json(outpost_agent* agent, const char* query, const char* row,
                                                 char** error);
/* Blocks until `query` takes rows again (OK), the agent ends (NOT_RUNNING) or
 * timeout_ms passes (WOULD_BLOCK). */
OUTPOST_API outpost_code outpost_agent_wait_writable(outpost_agent* agent, const char* query, int64_t timeout_ms,
                                                     char** error);

/* The batch is stored: acknowledges it and releases `ack`. */
OUTPOST_API void outpost_ack_send(outpost_ack* ack);
/* Releases `ack` without acknowledging (the batch comes again at the next start). */
OUTPOST_API void outpost_ack_drop(outpost_ack* ack);

#ifdef __cplusplus
}
#endif

#endif /* OUTPOST_OUTPOST_H */
