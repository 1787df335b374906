/* libFuzzer target for src/http1.c, the ngx transport's answer head in C. The oracle is a
 * second reader written here the way the transport's Lua reader works (lua/crm/transport/ngx.lua:
 * read_line, read_headers, header_line): lines split at LF with one CR dropped, line folding,
 * names and values cut as its patterns cut them. Whenever crm_http1_parse_head takes a head, the
 * oracle must read the same status, version, headers (repeats joined) and body offset; the
 * target aborts on any difference; the Content-Length it gives must be that header's digits.
 * crm_http1_url_unsafe is checked against iscntrl and space.
 * Input: two bytes of limit (0 means none), then the head. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../http1.h"

static void fail_at(int line)
{
    fprintf(stderr, "fuzz_http1.c:%d: invariant broken\n", line);
    abort();
}
#define check(ok) ((ok) ? (void)0 : fail_at(__LINE__))

/* Headers as name -> value, repeats joined with ", " (both readers' results end up here). */
#define MAX_HEADERS 256
typedef struct {
    size_t count;
    char *name[MAX_HEADERS], *value[MAX_HEADERS];
} headers;

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    check(d != NULL);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* Names and values never hold NUL here: the C parser declines control characters, and the
 * oracle's strings come from the same accepted text. */
static size_t find_header(headers *h, const char *name)
{
    for (size_t i = 0; i < h->count; i++)
        if (strcmp(h->name[i], name) == 0)
            return i;
    return h->count;
}

static void put(headers *h, const char *name, size_t nl, const char *v, size_t vl, int fold)
{
    char *key = dup_n(name, nl);
    size_t i = find_header(h, key);
    const char *sep = fold ? " " : ", ";
    if (i < h->count) {
        size_t old = strlen(h->value[i]);
        char *joined = malloc(old + strlen(sep) + vl + 1);
        check(joined != NULL);
        memcpy(joined, h->value[i], old);
        memcpy(joined + old, sep, strlen(sep));
        memcpy(joined + old + strlen(sep), v, vl);
        joined[old + strlen(sep) + vl] = 0;
        free(h->value[i]);
        h->value[i] = joined;
        free(key);
        return;
    }
    check(h->count < MAX_HEADERS);
    h->name[h->count] = key;
    h->value[h->count] = dup_n(v, vl);
    h->count++;
}

static void free_headers(headers *h)
{
    for (size_t i = 0; i < h->count; i++) {
        free(h->name[i]);
        free(h->value[i]);
    }
}

static void on_header(void *ud, const char *name, size_t nl, const char *v, size_t vl)
{
    check(nl >= 1 && nl <= CRM_HTTP1_NAME_MAX);
    put(ud, name, nl, v, vl, 0);
}

/* Lua's %s (isspace in the C locale). */
static int lua_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* The oracle. Reads one head of s[0..n) as the Lua reader does; returns 1 with the results when
 * the first status is final and the head is whole, 0 otherwise. */
typedef struct {
    const char *s;
    size_t n, pos;
} reader;

/* read_line: the next line without its LF and one CR before it; 0 when no LF is left. */
static int next_line(reader *r, const char **line, size_t *len)
{
    const char *lf = memchr(r->s + r->pos, '\n', r->n - r->pos);
    if (lf == NULL)
        return 0;
    *line = r->s + r->pos;
    *len = (size_t)(lf - *line);
    r->pos = (size_t)(lf - r->s) + 1;
    if (*len > 0 && (*line)[*len - 1] == '\r')
        (*len)--;
    return 1;
}

static int oracle(const char *s, size_t n, size_t limit, headers *h, int *minor, int *status,
                  size_t *body)
{
    reader r = {s, n, 0};
    const char *line;
    size_t len;
    if (!next_line(&r, &line, &len))
        return 0;
    /* ^HTTP/1%.(%d) (%d%d%d)(.*)$, the rest empty or starting with a space */
    if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)line[7]) ||
        line[8] != ' ' || !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
        !isdigit((unsigned char)line[11]) || (len > 12 && line[12] != ' '))
        return 0;
    *minor = line[7] - '0';
    *status = atoi((char[]){line[9], line[10], line[11], 0});
    if (*status < 200 || *status == 101)
        return 0;
    size_t size = 0;
    char last[CRM_HTTP1_NAME_MAX + 1] = {0};
    for (;;) {
        if (!next_line(&r, &line, &len))
            return 0;
        size += len + 2;
        if (size > limit)
            return 0;
        if (len == 0)
            break;
        if ((line[0] == ' ' || line[0] == '\t') && last[0]) {
            size_t a = 0, b = len;
            while (a < b && lua_space((unsigned char)line[a]))
                a++;
            while (b > a && lua_space((unsigned char)line[b - 1]))
                b--;
            put(h, last, strlen(last), line + a, b - a, 1);
            continue;
        }
        /* ^([^:]+):%s*(.-)%s*$ and no %s in the name */
        const char *colon = memchr(line, ':', len);
        if (colon == NULL || colon == line)
            continue;
        size_t nl = (size_t)(colon - line), i;
        for (i = 0; i < nl && !lua_space((unsigned char)line[i]); i++)
            ;
        if (i < nl || nl > CRM_HTTP1_NAME_MAX)
            continue;
        char name[CRM_HTTP1_NAME_MAX + 1];
        for (i = 0; i < nl; i++)
            name[i] = (char)tolower((unsigned char)line[i]);
        name[nl] = 0;
        size_t a = nl + 1, b = len;
        while (a < b && lua_space((unsigned char)line[a]))
            a++;
        while (b > a && lua_space((unsigned char)line[b - 1]))
            b--;
        put(h, name, nl, line + a, b - a, 0);
        memcpy(last, name, nl + 1);
    }
    *body = r.pos;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t limit = (size_t)data[0] << 8 | data[1];
    if (limit == 0)
        limit = SIZE_MAX;
    const char *s = (const char *)data + 2;
    size_t n = size - 2;

    int url = crm_http1_url_unsafe(s, n), want = 0;
    for (size_t i = 0; i < n; i++)
        want |= iscntrl((unsigned char)s[i]) || s[i] == ' ';
    check(url == want);

    headers got = {0}, ref = {0};
    crm_http1_head head;
    if (crm_http1_parse_head(s, n, limit, on_header, &got, &head)) {
        int minor, status;
        size_t body;
        check(oracle(s, n, limit, &ref, &minor, &status, &body));
        check(minor == head.minor && status == head.status && body == head.body && body <= n);
        check(got.count == ref.count);
        for (size_t i = 0; i < got.count; i++) {
            size_t j = find_header(&ref, got.name[i]);
            check(j < ref.count && strcmp(got.value[i], ref.value[j]) == 0);
        }
        /* Content-Length: the number of a value of 1 to 15 digits, -1 without, -2 otherwise */
        size_t c = find_header(&ref, "content-length");
        if (c == ref.count) {
            check(head.length == -1);
        } else {
            const char *v = ref.value[c];
            size_t vl = strlen(v), digits = strspn(v, "0123456789");
            if (vl >= 1 && vl <= 15 && digits == vl)
                check(head.length == strtoll(v, NULL, 10));
            else
                check(head.length == -2);
        }
    }
    free_headers(&got);
    free_headers(&ref);
    return 0;
}
