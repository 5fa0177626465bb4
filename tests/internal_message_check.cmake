# No other actor can send an actor's internal message (actors/interfaces.hpp):
# sending each one through the interface others hold does not compile, once
# per message; the same sends through the actors' own types compile, so the
# failures come from the handles' types and nothing else. Run by ctest:
# cmake -DCXX=... -DSOURCE=... -DGENERATED=... -DOUT=... -P this.
set(sends
    "SEND(buffer, ack_atom::value)"
    "SEND(buffer, purge_atom::value)"
    "SEND(query, batch_due_atom::value, uint64_t{1})"
    "SEND(waker, wake_atom::value, caf::timespan{})"
    "SEND(sensor, tick_atom::value)"
    "SEND(supervisor, restart_atom::value, uint64_t{1})"
    "SEND(host_link, retry_atom::value, Lane::EVENTS)"
    "SEND(net_link, retry_atom::value, read_atom::value, Lane::EVENTS)"
    "SEND(net_link, retry_atom::value, ack_atom::value, Lane::EVENTS)"
    "SEND(net_link, batch_due_atom::value, Lane::EVENTS)")
list(LENGTH sends expected)
list(JOIN sends ";\n  " body)
file(WRITE "${OUT}.cpp" "#include <caf/all.hpp>\n#include \"actors/interfaces.hpp\"\nusing namespace outpost;\n"
     "#define CAT2(a, b) a##b\n#define CAT(a, b) CAT2(a, b)\n"
     "#define SEND(actor, ...) caf::anon_send(CAT(actor, KIND){}, internal_atom::value, __VA_ARGS__)\n"
     "void sends() {\n  ${body};\n}\n")
foreach(kind _self_actor _actor)
  execute_process(
    COMMAND "${CXX}" -std=c++17 -fsyntax-only "-DKIND=${kind}" "-I${SOURCE}" "-I${GENERATED}" "${OUT}.cpp"
    RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(kind STREQUAL "_self_actor" AND NOT rc EQUAL 0)
    message(FATAL_ERROR "the internal messages do not compile through the actors' own types:\n${err}")
  endif()
endforeach()
string(REGEX MATCHALL "receiver does not accept given message" refused "${err}")
list(LENGTH refused n)
if(NOT n EQUAL expected)
  message(FATAL_ERROR "${expected} internal messages sent through the interfaces others hold, ${n} refused:\n${err}")
endif()
message(STATUS "${n} of ${expected} internal messages refused through the interfaces others hold")
