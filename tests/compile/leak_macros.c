/* A leak checker's macros, defined before the implementation is included
   (after the system headers, as such checkers require): the header must
   build with them, and its allocations must go through them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>

static long g_live;
static void *leak_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    g_live++;
    return malloc(n);
}
static void leak_free(void *p)
{
    if (p) g_live--;
    free(p);
}
#define malloc(n) leak_malloc((n), __FILE__, __LINE__)
#define free(p) leak_free(p)

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

int main(void)
{
    rite_desc d;
    rite_layer *l;
    memset(&d, 0, sizeof d);
    d.m = 8;
    d.n = 6;
    d.r = 2;
    if (rite_init(&l, &d) != RITE_OK) return 1;
    if (g_live != 1) return 2;   /* the layer's one block, through the macro */
    rite_free(l);
    printf("leak_macros: %ld blocks live after rite_free\n", g_live);
    return g_live == 0 ? 0 : 3;
}
