/* Growable byte buffers, kept between requests so a client allocates once. */
#ifndef CRM_BUF_H
#define CRM_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Appends n bytes (and keeps a NUL after them); 0 when out of memory. */
static inline int buf_append(struct buf *b, const char *p, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return 0;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 1;
}

static inline void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#endif
