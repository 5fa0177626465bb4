/* An agent inside a host program written in C, through include/outpost/outpost.h:
 * the host is the agent's link (its sink acknowledges each batch), feeds
 * one of its queries and gives VQL a plugin of its own; it runs a query
 * once and stops the agent.
 * Usage: embed-c DIR (the agent keeps its buffer below DIR). */
#include <outpost/outpost.h>

#include <stdio.h>
#include <stdlib.h>
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

/* The host's VQL plugin host_devices(): a row per device, in slices of at
 * most `budget` rows. Its state, made by open and released by close, is the
 * index of the next device. */
static const char* const devices[] = {"sda", "sdb", "nvme0n1"};

static int devices_open(void* user, const char* args_json, const outpost_waker* waker, outpost_call* call,
                        void** stream) {
  static const size_t first = 0;
  (void)user;
  (void)args_json; /* its arguments as one JSON object: it takes none */
  (void)waker;     /* it never parks */
  (void)call;
  *stream = malloc(sizeof first);
  if (!*stream) return 1;
  memcpy(*stream, &first, sizeof first);
  return 0;
}

static outpost_step devices_next(void* user, void* stream, outpost_call* call, size_t budget, int64_t* wait_ms) {
  size_t* next = stream;
  char row[64];
  (void)user;
  (void)wait_ms;
  for (; *next < sizeof devices / sizeof *devices && budget > 0; ++*next, --budget) {
    snprintf(row, sizeof row, "{\"Device\": \"%s\"}", devices[*next]);
    if (outpost_call_add_row(call, row, NULL) != OUTPOST_OK) return OUTPOST_STEP_FAILED;
  }
  return *next < sizeof devices / sizeof *devices ? OUTPOST_STEP_MORE : OUTPOST_STEP_DONE;
}

static void devices_close(void* user, void* stream) {
  (void)user;
  free(stream);
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
  outpost_plugin plugin;
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
  memset(&plugin, 0, sizeof plugin);
  plugin.name = "host_devices";
  plugin.description = "The host's devices.";
  plugin.open = devices_open;
  plugin.next = devices_next;
  plugin.close = devices_close;
  memset(&options, 0, sizeof options);
  options.plugins = &plugin;
  options.plugin_count = 1;
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
  good = good && ok(outpost_agent_query(agent, "SELECT upcase(string=Device) AS Device FROM host_devices()",
                                        print_row, NULL, 0, &error),
                    error, "query");
  error = NULL;
  good = ok(outpost_agent_stop(agent, 30000, &error), error, "stop") && good; /* the pushed row is in the buffer */
  outpost_agent_destroy(agent);
  return good ? 0 : 1;
}
