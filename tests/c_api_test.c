/* The C API as a host in C uses it (C99, -pedantic, only outpost/outpost.h):
 * an agent whose link is this program's sink and one of whose queries is
 * fed by this program's pushes; a one-shot query, the status, the log, and
 * the errors a host meets. Run by ctest; exits 1 naming the failed check. */

#define _DEFAULT_SOURCE /* mkdtemp, usleep under -std=c99 */

#include <outpost/outpost.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "c_check.h"

enum { kRows = 100 };

struct host {
  pthread_mutex_t mutex;
  unsigned rows;      /* of the query fed by pushes (id 9) */
  unsigned exact;     /* of them, those whose 64-bit value came through exactly */
  int logged_running; /* the agent's "agent running" line reached the log callback */
  unsigned one_shot;  /* rows of the one-shot query */
};

static void sink(void* user, const char* lane, const outpost_record* records, size_t count, outpost_ack* ack) {
  struct host* h = user;
  size_t i;
  (void)lane;
  pthread_mutex_lock(&h->mutex);
  for (i = 0; i < count; ++i) {
    const char* line = records[i].json;
    if (records[i].query_id != 9) continue;
    h->rows += (unsigned)records[i].rows;
    while ((line = strstr(line, "\"Big\":18446744073709551615")) != NULL) {
      ++h->exact;
      ++line;
    }
  }
  pthread_mutex_unlock(&h->mutex);
  outpost_ack_send(ack); /* stored (here: counted); the buffer may delete the batch */
}

static void log_line(void* user, int level, int64_t time_ns, const char* message) {
  struct host* h = user;
  (void)time_ns;
  if (level == 2 && strstr(message, "agent running")) {
    pthread_mutex_lock(&h->mutex);
    h->logged_running = 1;
    pthread_mutex_unlock(&h->mutex);
  }
}

static int on_row(void* user, const char* json) {
  struct host* h = user;
  if (strstr(json, "\"Hostname\"")) ++h->one_shot;
  return 1;
}

static unsigned rows_of(struct host* h) {
  unsigned n;
  pthread_mutex_lock(&h->mutex);
  n = h->rows;
  pthread_mutex_unlock(&h->mutex);
  return n;
}

int main(void) {
  char dir[] = "/tmp/outpost-c-api-XXXXXX";
  char yaml[1024];
  char row[256];
  char* error = NULL;
  char* status;
  outpost_options options;
  outpost_agent* agent = NULL;
  outpost_code code;
  struct host h;
  int i, waited;

  memset(&h, 0, sizeof h);
  pthread_mutex_init(&h.mutex, NULL);
  CHECK(mkdtemp(dir) != NULL, "a temporary directory");
  snprintf(yaml, sizeof yaml,
           "buffer: {dir: %s/buffer, limit: 64MiB}\n"
           "link: host\n"
           "inspector: {socket: ~}\n"
           "event_table: []\n"
           "queries: [{name: feed, id: 9, source: {type: host}}]\n",
           dir);
  memset(&options, 0, sizeof options);
  options.config_yaml = yaml;
  options.origin = "c-host.yaml";
  options.sink = sink;
  options.sink_user = &h;
  options.log = log_line;
  options.log_user = &h;
  CHECK(outpost_agent_create(&options, &agent) == OUTPOST_OK, "create");
  code = outpost_agent_start(agent, &error);
  CHECK(code == OUTPOST_OK, error ? error : "start");

  for (i = 0; i < kRows; ++i) {
    snprintf(row, sizeof row,
             "{\"N\": %d, \"User\": \"b\\u00f6b\", \"Big\": 18446744073709551615, \"Ratio\": 0.5, "
             "\"Ok\": true, \"None\": null}",
             i);
    while ((code = outpost_agent_push_json(agent, "feed", row, &error)) == OUTPOST_WOULD_BLOCK) {
      outpost_free(error);
      error = NULL;
      CHECK(outpost_agent_wait_writable(agent, "feed", 60000, NULL) == OUTPOST_OK, "wait_writable");
    }
    CHECK(code == OUTPOST_OK, error ? error : "push");
  }
  for (waited = 0; rows_of(&h) < kRows && waited < 3000; ++waited) usleep(10000);
  CHECK(rows_of(&h) == kRows, "every pushed row reached the sink");
  CHECK(h.exact == kRows, "a uint64 beyond int64 came through exactly");

  /* What a host gets wrong is named. */
  code = outpost_agent_push_json(agent, "feed", "{\"x\": [1]}", &error);
  CHECK(code == OUTPOST_INVALID_ARGUMENT && error && strstr(error, "nested"), "a nested value is refused");
  outpost_free(error);
  error = NULL;
  code = outpost_agent_push_json(agent, "feed", "{\"x\": 1", &error);
  CHECK(code == OUTPOST_INVALID_ARGUMENT && error && strstr(error, "offset 7"), "a cut row names the offset");
  outpost_free(error);
  error = NULL;
  code = outpost_agent_push_json(agent, "nope", "{}", &error);
  CHECK(code == OUTPOST_UNKNOWN_QUERY && error && strstr(error, "nope"), "an unknown query is named");
  outpost_free(error);
  error = NULL;
  CHECK(outpost_agent_push_json(NULL, "feed", "{}", NULL) == OUTPOST_INVALID_ARGUMENT, "a NULL agent");
  CHECK(strcmp(outpost_code_name(OUTPOST_WOULD_BLOCK), "would_block") == 0, "code names");

  CHECK(outpost_agent_query(agent, "SELECT * FROM info()", on_row, &h, 0, &error) == OUTPOST_OK,
        error ? error : "query");
  CHECK(h.one_shot == 1, "the one-shot query's row");
  status = outpost_agent_status_json(agent);
  CHECK(status && strstr(status, "\"Kind\":\"link\"") && strstr(status, "\"kind\":\"host\""), "status");
  outpost_free(status);
  CHECK(outpost_agent_stop(agent, 30000, &error) == OUTPOST_OK, error ? error : "stop");
  CHECK(h.logged_running, "the agent's log reached the log callback");
  CHECK(outpost_agent_start(agent, &error) == OUTPOST_ALREADY_STARTED, "an agent runs once");
  outpost_free(error);
  error = NULL;
  outpost_agent_destroy(agent);

  /* A configuration that is refused names itself. */
  options.config_yaml = "link: ftp\n";
  CHECK(outpost_agent_create(&options, &agent) == OUTPOST_OK, "create");
  code = outpost_agent_start(agent, &error);
  CHECK(code == OUTPOST_INVALID_CONFIG && error && strstr(error, "c-host.yaml: link"), "invalid_config");
  outpost_free(error);
  outpost_agent_destroy(agent);
  snprintf(yaml, sizeof yaml, "rm -rf %s", dir);
  CHECK(system(yaml) == 0, "removing the temporary directory");
  printf("ok: a host in C pushed %d rows into its own sink, ran a query and read the status\n", kRows);
  return 0;
}
