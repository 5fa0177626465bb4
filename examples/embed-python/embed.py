#!/usr/bin/env python3
"""An agent inside a Python program, through the C API (include/outpost/outpost.h)
with ctypes from Debian's python3 alone: the program is the agent's link (its sink
acknowledges each batch) and feeds one of its queries; it runs a query once and
stops the agent.

Usage: embed.py LIBOUTPOST_SO DIR   (the agent keeps its buffer below DIR)
"""
import ctypes as C
import json
import sys
import threading

OK, WOULD_BLOCK = 0, 8  # outpost_code


class Record(C.Structure):  # outpost_record
    _fields_ = [("seq", C.c_uint64), ("query_id", C.c_uint64), ("rows", C.c_uint64),
                ("json", C.c_char_p), ("json_len", C.c_size_t)]


SINK = C.CFUNCTYPE(None, C.c_void_p, C.c_char_p, C.POINTER(Record), C.c_size_t, C.c_void_p)
LOG = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_int64, C.c_char_p)
WRITABLE = C.CFUNCTYPE(None, C.c_void_p, C.c_char_p)
ROW = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_char_p)


class Options(C.Structure):  # outpost_options
    _fields_ = [("config_yaml", C.c_char_p), ("origin", C.c_char_p),
                ("overrides", C.POINTER(C.c_char_p)), ("override_count", C.c_size_t),
                ("sink", SINK), ("sink_user", C.c_void_p), ("log", LOG), ("log_user", C.c_void_p),
                ("on_writable", WRITABLE), ("writable_user", C.c_void_p), ("worker_threads", C.c_uint),
                ("plugins", C.c_void_p), ("plugin_count", C.c_size_t),  # none here
                ("functions", C.c_void_p), ("function_count", C.c_size_t)]


def load(path):
    lib = C.CDLL(path)
    lib.outpost_code_name.restype = C.c_char_p
    lib.outpost_agent_create.argtypes = [C.POINTER(Options), C.POINTER(C.c_void_p)]
    for name in ("outpost_agent_start", "outpost_agent_wait"):
        getattr(lib, name).argtypes = [C.c_void_p, C.POINTER(C.c_void_p)]
    lib.outpost_agent_stop.argtypes = [C.c_void_p, C.c_int64, C.POINTER(C.c_void_p)]
    lib.outpost_agent_push_json.argtypes = [C.c_void_p, C.c_char_p, C.c_char_p, C.POINTER(C.c_void_p)]
    lib.outpost_agent_wait_writable.argtypes = [C.c_void_p, C.c_char_p, C.c_int64, C.POINTER(C.c_void_p)]
    lib.outpost_agent_query.argtypes = [C.c_void_p, C.c_char_p, ROW, C.c_void_p, C.c_uint64, C.POINTER(C.c_void_p)]
    lib.outpost_agent_destroy.argtypes = [C.c_void_p]
    lib.outpost_ack_send.argtypes = [C.c_void_p]
    lib.outpost_free.argtypes = [C.c_void_p]
    return lib


def call(lib, what, fn, *args):
    """Calls fn(*args, &error); raises with the code's name and the message."""
    error = C.c_void_p()
    code = fn(*args, C.byref(error))
    if code != OK:
        message = C.cast(error, C.c_char_p).value.decode() if error else ""
        lib.outpost_free(error)
        raise RuntimeError(f"{what}: {lib.outpost_code_name(code).decode()}: {message}")
    return code


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: embed.py LIBOUTPOST_SO DIR")
    lib = load(sys.argv[1])
    lines, rows = [], threading.Event()

    @SINK
    def sink(user, lane, records, count, ack):  # on the agent's link thread
        for i in range(count):  # a real host stores the batch durably first
            lines.extend(json.loads(line) for line in records[i].json.decode().splitlines())
        lib.outpost_ack_send(ack)
        if any(line.get("row", {}).get("Event") == "login" for line in lines):
            rows.set()

    options = Options()
    options.config_yaml = (f"buffer: {{dir: '{sys.argv[2]}/buffer', limit: 64MiB}}\n"
                           "link: host\ninspector: {socket: ~}\nevent_table: []\n"
                           "queries: [{name: logins, source: {type: host}}]\n").encode()
    options.origin = b"embed-python"
    options.sink = sink
    agent = C.c_void_p()
    if lib.outpost_agent_create(C.byref(options), C.byref(agent)) != OK:
        sys.exit("embed.py: create failed")
    try:
        call(lib, "start", lib.outpost_agent_start, agent)
        row = json.dumps({"User": "alice", "Event": "login", "N": 2**63 + 1}).encode()
        while lib.outpost_agent_push_json(agent, b"logins", row, None) == WOULD_BLOCK:
            call(lib, "wait", lib.outpost_agent_wait_writable, agent, b"logins", 60000)
        if not rows.wait(60):
            raise RuntimeError("the pushed row did not reach the sink")
        printed = []

        @ROW
        def on_row(user, text):
            printed.append(json.loads(text))
            return 1  # 0 would end the query here

        call(lib, "query", lib.outpost_agent_query, agent, b"SELECT OS, Pid FROM info()", on_row, None, 0)
        print("sink:", [line["row"] for line in lines if "row" in line])
        print("query:", printed)
        call(lib, "stop", lib.outpost_agent_stop, agent, 30000)
    finally:
        lib.outpost_agent_destroy(agent)


if __name__ == "__main__":
    main()
