#pragma once
// libgrace.so exports its API and nothing else: the library is built with hidden visibility,
// and every public class and function is marked GRACE_API. A type declared inside an exported
// class is exported with it unless marked GRACE_LOCAL: the library's own parts of a public class
// (its state, its helpers) are.
#if defined(__GNUC__) || defined(__clang__)
#define GRACE_API __attribute__((visibility("default")))
#define GRACE_LOCAL __attribute__((visibility("hidden")))
#else
#define GRACE_API
#define GRACE_LOCAL
#endif
