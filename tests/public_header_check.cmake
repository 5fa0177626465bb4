# The public header as a host compiles it: alone in its translation unit,
# with -Wall -Wextra -Werror, and with no name of a library Outpost is built
# on in what it brings in (CAF, Cap'n Proto and kj, LMDB, spdlog, fmt,
# yaml-cpp). Run by ctest: cmake -DCXX=... -DINCLUDE=... -DOUT=... -P this.
file(WRITE "${OUT}.cpp" "#include <outpost/outpost.hpp>\n")
foreach(step -E -fsyntax-only)
  execute_process(
    COMMAND "${CXX}" -std=c++17 -Wall -Wextra -Werror "-I${INCLUDE}" ${step} "${OUT}.cpp" -o "${OUT}.i"
    RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "outpost/outpost.hpp does not compile alone:\n${err}")
  endif()
  if(step STREQUAL "-E")
    file(READ "${OUT}.i" text)
  endif()
endforeach()
string(REGEX MATCH "[^A-Za-z_](caf|capnp|kj|spdlog|fmt|YAML)::|namespace (caf|capnp|kj|spdlog|fmt|YAML)[ {]|MDB_[a-z]|mdb_[a-z]+\\("
       found "${text}")
if(found)
  message(FATAL_ERROR "outpost/outpost.hpp brings in a private library's name: '${found}'")
endif()
