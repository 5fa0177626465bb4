/* An agent inside a host program written in C, through include/outpost/outpost.h:
 * the host is the agent's link (its sink acknowledges each batch) and feeds
 * one of its queries; it runs a query once and stops the agent.
 * Usage: embed-c DIR (the agent keeps its buffer below DIR). */
#include <outpost/outpost.h>

#include <stdio.h>
#include <string.h>

static unsigned long rows_seen;

/* A real host stores the batch durably first (and drops a seq it stored
 * before: what it had not acknowledged comes again after a crash). */
static void sink(void* user, const char* lane, const outpost_record* records, size_t count, outpost_ack* ack) {
  size_t i;
  (void)user;
  for (i = 0; i < count; ++i) {
    printf("%s seq %llu: %s", lane, (unsigned long long)records[i].seq, records[i].json);
    rows_seen += (unsigned long)records[i].rows; /* one link thread: no lock needed here */
  }
  outpost_ack_send(ack);
}

static int print_row(void* user, const char* json) {
  (void)user;
  printf("%s\n", json);
  return 1; /* 0 would end the query here */
}

/* Prints what failed and releases the message. */
static int ok(outpost_code code, char* error, const char* what) {
  if (code != OUTPOST_OK) fprintf(stderr, "embed-c: %s: %s: %s\n", what, outpost_code_name(code), error ? error : "");
  outpost_free(error);
  return code == OUTPOST_OK;
}

int main(int argc, char** argv) {
  char yaml[1024];
  char* error = NULL;
  outpost_options options;
  outpost_agent* agent = NULL;
  int good;
  if (argc != 2) {
    fprintf(stderr, "usage: embed-c DIR\n");
    return 2;
  }
  snprintf(yaml, sizeof yaml,
           "buffer: {dir: '%s/buffer', limit: 64MiB}\n"
           "link: host\n"
           "inspector: {socket: ~}\n"
           "event_table: []\n"
           "queries: [{name: logins, source: {type: host}}]\n",
           argv[1]);
  memset(&options, 0, sizeof options);
  options.config_yaml = yaml;
  options.origin = "embed-c";
  options.sink = sink;
  if (outpost_agent_create(&options, &agent) != OUTPOST_OK) return 1;
  if (!ok(outpost_agent_start(agent, &error), error, "start")) return 1;

  good = ok(outpost_agent_push_json(agent, "logins", "{\"User\": \"alice\", \"Event\": \"login\"}", &error), error,
            "push");
  error = NULL;
  good = good && ok(outpost_agent_query(agent, "SELECT OS, Pid FROM info()", print_row, NULL, 0, &error), error,
                    "query");
  error = NULL;
  good = ok(outpost_agent_stop(agent, 30000, &error), error, "stop") && good; /* the pushed row is in the buffer */
  outpost_agent_destroy(agent);
  return good ? 0 : 1;
}
