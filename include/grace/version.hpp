#pragma once
// grace's version, for #if checks in code that builds against several.
#define GRACE_VERSION_MAJOR 0
#define GRACE_VERSION_MINOR 3
#define GRACE_VERSION_PATCH 0
#define GRACE_VERSION_STRING "0.3.0"
