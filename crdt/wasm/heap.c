/* heap.c - crdt.wasm's allocator: size-class free lists for small blocks over wasi-libc's dlmalloc
 *
 * libcrdt allocates many small blocks and frees most of them soon: a write builds a one-entry
 * delta timeline (its object, arrays and member index) and frees it once encoded, a merge decodes
 * a delta the same way. dlmalloc spends ~9% of the wasm side's time on these (bench_wasm.sh's
 * profile). Here a block of at most HEAP_SMALL_MAX bytes comes from a free list of its size class
 * (a pop; a free is a push), carved from 64 KiB pages of one class each; larger blocks go to
 * dlmalloc as before. No header: the class of a small block is its page's entry in page_class
 * (one byte per 64 KiB of the 4 GiB address space), 0 for memory that is not in a page of ours,
 * so free and realloc tell the two kinds apart from the address alone.
 *
 * Pages are cut from chunks of HEAP_CHUNK bytes that dlmalloc hands out (never given back: the
 * linear memory of a wasm instance only grows anyway); a chunk's partial pages at either end are
 * not used, so no dlmalloc block shares a page with small blocks. Free small blocks stay in their
 * class for the life of the instance (a page of posts reuses them on the next writes).
 */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap.h"

#define PAGE_SHIFT 16
#define PAGE_SIZE (1u << PAGE_SHIFT)
#define HEAP_CHUNK (16u * PAGE_SIZE) /* 1 MiB: 15 usable pages, whatever dlmalloc's alignment */

/* Size classes in bytes, multiples of 8 (every block 8-aligned, for doubles and u64s): the
 * sizes libcrdt asks for most (small structs, arrays of a few entries, short members). */
static const uint16_t class_size[] = {0,   8,   16,  24,  32,  40,  48,  56,  64,  80,
                                      96,  112, 128, 160, 192, 224, 256, 320, 384, 448,
                                      512};
#define NCLASS (sizeof class_size / sizeof class_size[0])
_Static_assert(NCLASS < 256, "a class fits the page table's byte");

static uint8_t class_of_len[HEAP_SMALL_MAX / 8 + 1]; /* (n + 7) / 8 -> class, made at first use */
static uint8_t page_class[1u << (32 - PAGE_SHIFT)];  /* 64 KiB: every page of the 32-bit space */

typedef struct free_block {
    struct free_block *next;
} free_block_t;

static free_block_t *free_list[NCLASS];
static uint8_t *carve[NCLASS], *carve_end[NCLASS]; /* the unused rest of each class's page */
static uint8_t *chunk_next, *chunk_end;            /* whole pages not yet given to a class */

static void init_classes(void)
{
    unsigned c = 1;
    for (unsigned i = 1; i <= HEAP_SMALL_MAX / 8; i++) {
        while (class_size[c] < i * 8)
            c++;
        class_of_len[i] = (uint8_t)c;
    }
    class_of_len[0] = 1;
}

/* A fresh page for class c, or 0 when dlmalloc has no chunk left. */
static int new_page(unsigned c)
{
    if (chunk_next == chunk_end) {
        uint8_t *chunk = malloc(HEAP_CHUNK);
        if (!chunk)
            return -1;
        uintptr_t first = ((uintptr_t)chunk + PAGE_SIZE - 1) & ~(uintptr_t)(PAGE_SIZE - 1);
        uintptr_t end = ((uintptr_t)chunk + HEAP_CHUNK) & ~(uintptr_t)(PAGE_SIZE - 1);
        chunk_next = (uint8_t *)first;
        chunk_end = (uint8_t *)end;
    }
    uint8_t *page = chunk_next;
    chunk_next += PAGE_SIZE;
    page_class[(uintptr_t)page >> PAGE_SHIFT] = (uint8_t)c;
    carve[c] = page;
    carve_end[c] = page + PAGE_SIZE;
    return 0;
}

static void *small_alloc(unsigned c)
{
    free_block_t *b = free_list[c];
    if (b) {
        free_list[c] = b->next;
        return b;
    }
    size_t sz = class_size[c];
    if ((size_t)(carve_end[c] - carve[c]) < sz && new_page(c) < 0)
        return NULL;
    void *p = carve[c];
    carve[c] += sz;
    return p;
}

void *heap_alloc(size_t n)
{
    if (n <= HEAP_SMALL_MAX) {
        if (!class_of_len[0])
            init_classes();
        void *p = small_alloc(class_of_len[(n + 7) >> 3]);
        if (p)
            return p;
        /* no chunk for a new page: dlmalloc may still have a small block */
    }
    return malloc(n ? n : 1);
}

void heap_release(void *p)
{
    if (!p)
        return;
    unsigned c = page_class[(uintptr_t)p >> PAGE_SHIFT];
    if (c) {
        free_block_t *b = p;
        b->next = free_list[c];
        free_list[c] = b;
        return;
    }
    free(p);
}

size_t heap_usable(const void *p)
{
    if (!p)
        return 0;
    unsigned c = page_class[(uintptr_t)p >> PAGE_SHIFT];
    return c ? class_size[c] : malloc_usable_size((void *)p);
}

void *heap_resize(void *p, size_t n)
{
    if (!p)
        return heap_alloc(n);
    unsigned c = page_class[(uintptr_t)p >> PAGE_SHIFT];
    if (!c)
        return realloc(p, n ? n : 1); /* a dlmalloc block stays one */
    size_t have = class_size[c];
    if (n <= have && (n > have / 2 || have <= 8))
        return p;
    void *q = heap_alloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, n < have ? n : have);
    heap_release(p);
    return q;
}
