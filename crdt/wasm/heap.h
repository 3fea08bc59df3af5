/* heap.h - crdt.wasm's allocator (heap.c): size classes for small blocks, dlmalloc for the rest */
#ifndef CRDT_WASM_HEAP_H
#define CRDT_WASM_HEAP_H

#include <stddef.h>

#define HEAP_SMALL_MAX 512 /* bytes: larger blocks are dlmalloc's */

void *heap_alloc(size_t n);          /* n bytes (at least 1), 8-aligned, or NULL */
void *heap_resize(void *p, size_t n); /* realloc's contract; n = 0 keeps a 1-byte block */
void heap_release(void *p);           /* free's contract */
size_t heap_usable(const void *p);    /* the bytes the block has (>= what was asked) */

#endif
