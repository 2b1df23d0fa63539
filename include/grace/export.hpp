#pragma once
// libgrace.so exports its API and nothing else: the library is built with hidden visibility,
// and every public class and function is marked GRACE_API.
#if defined(__GNUC__) || defined(__clang__)
#define GRACE_API __attribute__((visibility("default")))
#else
#define GRACE_API
#endif
