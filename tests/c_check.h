/* The C API tests' check (C99): exits 1 naming the failed check and where. */
#ifndef OUTPOST_TESTS_C_CHECK_H
#define OUTPOST_TESTS_C_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, what)                                                  \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "FAILED %s:%d: %s (%s)\n", __FILE__, __LINE__, what, #cond); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#endif
