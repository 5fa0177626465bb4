#pragma once
// OUTPOST_API marks what liboutpost.so exports. Outpost is built with
// -fvisibility=hidden: a declaration without it stays inside the library.

#if defined(__GNUC__) || defined(__clang__)
#define OUTPOST_API __attribute__((visibility("default")))
#else
#define OUTPOST_API
#endif
