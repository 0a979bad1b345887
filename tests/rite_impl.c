/* rite_impl.c - lora_rite.h's implementation, compiled once and linked into
   every test that uses only the public API (as a program that includes the
   header in many files compiles it in one). Tests that reach into the
   implementation, or build it another way (portable kernels, C++, strict
   C99 and C11, a leak checker's macros), define LORA_RITE_IMPLEMENTATION
   themselves. */
#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"
