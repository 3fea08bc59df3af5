/* memcpy.c - crdt.wasm's memcpy, memmove and memset: short ones by loops, long ones by the bulk
 * memory instructions
 *
 * With -mbulk-memory everywhere, clang turns every copy whose length is not a constant into
 * memory.copy, which V8 runs as a call out of the generated code into C: a fixed cost larger
 * than the few bytes libcrdt copies most often (a member, a hash's tail, an entry). Without the
 * feature, wasi-libc's functions are slow for long copies (a state's encoding). So crdt.wasm is
 * built without it, and these definitions (linked before libc's) copy up to SHORT bytes in a
 * loop and hand longer ones to memory.copy / memory.fill, enabled for these functions alone.
 * Compiled without LTO (CMakeLists.txt): the calls that code generation makes to memcpy must
 * find a definition that is already machine code.
 */
#include <stddef.h>
#include <stdint.h>

#define SHORT 32

#define BULK __attribute__((target("bulk-memory"), noinline))

BULK static void bulk_copy(void *d, const void *s, size_t n)
{
    __builtin_memmove(d, s, n);
}

BULK static void bulk_fill(void *d, int c, size_t n)
{
    __builtin_memset(d, c, n);
}

void *memcpy(void *restrict d, const void *restrict s, size_t n)
{
    if (n > SHORT) {
        bulk_copy(d, s, n);
        return d;
    }
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n >= 8) {
        uint64_t w;
        __builtin_memcpy(&w, sp, 8);
        __builtin_memcpy(dp, &w, 8);
        dp += 8;
        sp += 8;
        n -= 8;
    }
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    if (n > SHORT || (uintptr_t)d - (uintptr_t)s < n) {
        /* long, or d inside s's bytes (a forward copy would overwrite what it reads):
         * memory.copy has memmove's semantics */
        bulk_copy(d, s, n);
        return d;
    }
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, size_t n)
{
    if (n > SHORT) {
        bulk_fill(d, c, n);
        return d;
    }
    unsigned char *dp = d;
    while (n--)
        *dp++ = (unsigned char)c;
    return d;
}
