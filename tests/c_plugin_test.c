/* The host's VQL plugins and functions through the C API (C99, -pedantic,
 * only outpost/outpost.h): rows in slices, a function's value, a parked
 * plugin woken from another thread, failures named, every opened stream
 * closed. Run by ctest; exits 1 naming the failed check. */

#define _DEFAULT_SOURCE /* usleep under -std=c99 */

#include <outpost/outpost.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "c_check.h"

struct counts {
  pthread_mutex_t mutex;
  int opens, closes, slices;
};

/* An integer argument from the call's JSON object; -1 when it is not there. */
static long argument(const char* args_json, const char* name) {
  char key[64];
  const char* at;
  snprintf(key, sizeof key, "\"%s\":", name);
  at = strstr(args_json, key);
  return at ? strtol(at + strlen(key), NULL, 10) : -1;
}

struct count_state {
  long next, count;
};

/* c_count(count): rows N = 0..count-1, up to the budget per slice. */
static int count_open(void* user, const char* args_json, const outpost_waker* waker, outpost_call* call,
                      void** stream) {
  struct counts* c = user;
  struct count_state* s;
  (void)waker;
  (void)call;
  s = malloc(sizeof *s);
  s->next = 0;
  s->count = argument(args_json, "count");
  *stream = s;
  pthread_mutex_lock(&c->mutex);
  ++c->opens;
  pthread_mutex_unlock(&c->mutex);
  return 0;
}

static outpost_step count_next(void* user, void* stream, outpost_call* call, size_t budget, int64_t* wait_ms) {
  struct counts* c = user;
  struct count_state* s = stream;
  char row[64];
  (void)wait_ms;
  pthread_mutex_lock(&c->mutex);
  ++c->slices;
  pthread_mutex_unlock(&c->mutex);
  for (; s->next < s->count && budget > 0; ++s->next, --budget) {
    snprintf(row, sizeof row, "{\"N\": %ld}", s->next);
    if (outpost_call_add_row(call, row, NULL) != OUTPOST_OK) return OUTPOST_STEP_FAILED;
  }
  return s->next < s->count ? OUTPOST_STEP_MORE : OUTPOST_STEP_DONE;
}

static void count_close(void* user, void* stream) {
  struct counts* c = user;
  free(stream);
  pthread_mutex_lock(&c->mutex);
  ++c->closes;
  pthread_mutex_unlock(&c->mutex);
}

/* c_fail(): its first slice fails. c_refuse(): its open fails. */
static outpost_step fail_next(void* user, void* stream, outpost_call* call, size_t budget, int64_t* wait_ms) {
  (void)user;
  (void)stream;
  (void)budget;
  (void)wait_ms;
  outpost_call_fail(call, "the device is gone");
  return OUTPOST_STEP_FAILED;
}

static int refuse_open(void* user, const char* args_json, const outpost_waker* waker, outpost_call* call,
                       void** stream) {
  (void)user;
  (void)args_json;
  (void)waker;
  (void)stream;
  outpost_call_fail(call, "no such device");
  return 1;
}

/* c_wait(): parked until another thread has set `ready` and woken it. */
struct wait_state {
  pthread_mutex_t mutex;
  const outpost_waker* waker;
  int ready, done;
};
static struct wait_state waiting;

static void* wake_later(void* unused) {
  (void)unused;
  usleep(20000);
  pthread_mutex_lock(&waiting.mutex);
  waiting.ready = 1;
  pthread_mutex_unlock(&waiting.mutex);
  outpost_waker_wake(waiting.waker);
  return NULL;
}

static int wait_open(void* user, const char* args_json, const outpost_waker* waker, outpost_call* call,
                     void** stream) {
  (void)user;
  (void)args_json;
  (void)call;
  waiting.waker = waker;
  *stream = &waiting;
  return 0;
}

static outpost_step wait_next(void* user, void* stream, outpost_call* call, size_t budget, int64_t* wait_ms) {
  struct wait_state* w = stream;
  int ready;
  (void)user;
  (void)budget;
  (void)wait_ms;
  pthread_mutex_lock(&w->mutex);
  ready = w->ready;
  pthread_mutex_unlock(&w->mutex);
  if (!ready) return OUTPOST_STEP_PARKED;
  outpost_call_add_row(call, "{\"Woke\": true}", NULL);
  return OUTPOST_STEP_DONE;
}

/* c_double(n): 2n. */
static int double_call(void* user, const char* args_json, outpost_call* call) {
  char value[32];
  (void)user;
  snprintf(value, sizeof value, "%ld", 2 * argument(args_json, "n"));
  return outpost_call_set_result(call, value, NULL) == OUTPOST_OK ? 0 : 1;
}

struct seen {
  long rows, bad;
  int woke;
};

static int on_row(void* user, const char* json) {
  struct seen* s = user;
  long n = argument(json, "N"), d = argument(json, "D");
  if (strstr(json, "\"Woke\":true")) s->woke = 1;
  if (n >= 0 && d != 2 * n) ++s->bad;
  ++s->rows;
  return 1;
}

static int ignore_row(void* user, const char* json) {
  (void)user;
  (void)json;
  return 1;
}

int main(void) {
  static const outpost_argument count_args[] = {{"count", "int", 1, "how many rows"}};
  static const outpost_argument n_arg[] = {{"n", "int", 1, NULL}};
  struct counts c;
  struct seen seen;
  outpost_plugin plugins[4];
  outpost_function functions[1];
  outpost_options options;
  outpost_agent* agent = NULL;
  pthread_t waker;
  char* error = NULL;
  outpost_code code;

  memset(&c, 0, sizeof c);
  memset(&seen, 0, sizeof seen);
  memset(plugins, 0, sizeof plugins);
  memset(functions, 0, sizeof functions);
  pthread_mutex_init(&c.mutex, NULL);
  pthread_mutex_init(&waiting.mutex, NULL);
  plugins[0].name = "c_count";
  plugins[0].args = count_args;
  plugins[0].arg_count = 1;
  plugins[0].open = count_open;
  plugins[0].next = count_next;
  plugins[0].close = count_close;
  plugins[0].user = &c;
  plugins[1] = plugins[0];
  plugins[1].name = "c_fail";
  plugins[1].args = NULL;
  plugins[1].arg_count = 0;
  plugins[1].next = fail_next;
  plugins[2] = plugins[1];
  plugins[2].name = "c_refuse";
  plugins[2].open = refuse_open;
  plugins[3].name = "c_wait";
  plugins[3].event = 1;
  plugins[3].open = wait_open;
  plugins[3].next = wait_next;
  functions[0].name = "c_double";
  functions[0].args = n_arg;
  functions[0].arg_count = 1;
  functions[0].call = double_call;
  memset(&options, 0, sizeof options);
  options.plugins = plugins;
  options.plugin_count = 4;
  options.functions = functions;
  options.function_count = 1;
  CHECK(outpost_agent_create(&options, &agent) == OUTPOST_OK, "create");

  code = outpost_agent_query(agent, "SELECT N, c_double(n=N) AS D FROM c_count(count=1000)", on_row, &seen, 0,
                             &error);
  CHECK(code == OUTPOST_OK, error ? error : "query");
  CHECK(seen.rows == 1000 && seen.bad == 0, "every row, with its function's value");
  CHECK(c.slices > 1, "the rows came in slices");

  code = outpost_agent_query(agent, "SELECT * FROM c_fail()", ignore_row, NULL, 0, &error);
  CHECK(code == OUTPOST_QUERY_FAILED && error && strcmp(error, "c_fail(): the device is gone") == 0,
        "a failing slice fails the query, named");
  outpost_free(error);
  error = NULL;
  code = outpost_agent_query(agent, "SELECT * FROM c_refuse()", ignore_row, NULL, 0, &error);
  CHECK(code == OUTPOST_QUERY_FAILED && error && strcmp(error, "c_refuse(): no such device") == 0,
        "a failing open fails the query, named");
  outpost_free(error);
  error = NULL;
  code = outpost_agent_query(agent, "SELECT * FROM c_count()", ignore_row, NULL, 0, &error);
  CHECK(code == OUTPOST_INVALID_QUERY && error && strstr(error, "count: required"), "a missing argument");
  outpost_free(error);
  error = NULL;
  CHECK(c.opens == 2 && c.closes == 2, "every opened stream was closed, also the failed one");

  CHECK(pthread_create(&waker, NULL, wake_later, NULL) == 0, "a thread");
  code = outpost_agent_query(agent, "SELECT * FROM c_wait()", on_row, &seen, 1, &error);
  pthread_join(waker, NULL);
  CHECK(code == OUTPOST_OK && seen.woke, "the parked plugin ran once woken");
  outpost_agent_destroy(agent);

  /* A definition the agent refuses is named when it starts; one without a name at once. */
  plugins[0].name = "info";
  options.plugin_count = 1;
  options.config_yaml = "buffer: {dir: /nonexistent/never-opened}\n";
  CHECK(outpost_agent_create(&options, &agent) == OUTPOST_OK, "create");
  code = outpost_agent_start(agent, &error);
  CHECK(code == OUTPOST_INVALID_CONFIG && error && strstr(error, "plugin info: the name is taken"), "a taken name");
  outpost_free(error);
  outpost_agent_destroy(agent);
  plugins[0].name = NULL;
  CHECK(outpost_agent_create(&options, &agent) == OUTPOST_INVALID_ARGUMENT, "a plugin without a name");
  printf("ok: a host in C ran its own plugins and function\n");
  return 0;
}
