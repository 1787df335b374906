/* libFuzzer target for wire.c: every C function that reads bytes from the network or the caller.
 * The first input byte picks the function; the checks abort on any broken invariant:
 *   0 crm_escape            1 crm_parse_headers     2 crm_has_ctl and friends
 *   3 the JSON scan and rewrite (against a plain reference written here, byte for byte)
 *   4 crm_is_utf8 and crm_is_path_id (against a reference that decodes code points)
 *   5 crm_plan_scan (src/jsonplan.c): a plan it calls simple is a well-formed tree of events
 *     that points into the text, and it finds the same long numbers as crm_json_scan */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonplan.h"
#include "../wire.h"

#include <stdio.h>

/* A broken invariant: the line says which. */
static void fail_at(int line)
{
    fprintf(stderr, "fuzz_wire.c:%d: invariant broken\n", line);
    abort();
}
#define check(ok) ((ok) ? (void)0 : fail_at(__LINE__))

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void on_header(void *ud, const char *name, size_t nl, const char *v, size_t vl)
{
    size_t *seen = ud;
    (*seen)++;
    check(nl >= 1 && nl <= CRM_HEADER_NAME_MAX);
    for (size_t i = 0; i < nl; i++)
        check(!(name[i] >= 'A' && name[i] <= 'Z') && name[i] != ':' && name[i] != '\n');
    for (size_t i = 0; i < vl; i++)
        check(v[i] != '\n');
    check(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != '\r'));
}

static void fuzz_escape(const char *s, size_t n)
{
    char *out = malloc(3 * n + 1);
    check(out != NULL);
    size_t o = crm_escape(s, n, out);
    check(o >= n && o <= 3 * n);
    /* Decoding gives the input back, and only unreserved characters stay literal. */
    size_t j = 0;
    for (size_t i = 0; i < o; i++) {
        char c = out[i];
        if (c == '%') {
            check(i + 2 < o);
            int hi = unhex(out[i + 1]), lo = unhex(out[i + 2]);
            check(hi >= 0 && lo >= 0);
            check(j < n && (unsigned char)s[j] == (unsigned char)(hi * 16 + lo));
            i += 2;
        } else {
            check((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || c == '~');
            check(j < n && s[j] == c);
        }
        j++;
    }
    check(j == n);
    free(out);
}

static void fuzz_headers(const char *s, size_t n)
{
    size_t seen = 0, lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += s[i] == '\n';
    size_t count = crm_parse_headers(s, n, on_header, &seen);
    check(count == seen && count <= lines);
}

static void fuzz_ctl(const char *s, size_t n)
{
    int naive = memchr(s, '\r', n) || memchr(s, '\n', n) || memchr(s, '\0', n);
    check(crm_has_ctl(s, n) == naive);
    int high = 0;
    for (size_t i = 0; i < n; i++)
        high |= (unsigned char)s[i] >= 0x80;
    check(crm_has_non_ascii(s, n) == high);
}

/* ---- JSON scan and rewrite ----
 * The reference reads the text byte by byte with an in-string flag (the code under test jumps
 * between stop bytes with tables); both must agree on every field and on every output byte. */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

typedef struct {
    size_t arrays, empties;
    int has_null, true_first, long_exp, mode;
} ref_info;

static void ref_scan(const char *s, size_t n, ref_info *r)
{
    memset(r, 0, sizeof *r);
    int in_str = 0, esc = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '[') {
            r->arrays++;
            size_t j = i + 1;
            while (j < n && is_ws(s[j]))
                j++;
            if (j < n && s[j] == ']')
                r->empties++;
            else if (j + 4 <= n && memcmp(s + j, "true", 4) == 0)
                r->true_first = 1;
        } else if (c == 'n') {
            if (i + 4 <= n && memcmp(s + i, "null", 4) == 0)
                r->has_null = 1;
        } else if ((c == 'e' || c == 'E') && i > 0 && (is_digit(s[i - 1]) || s[i - 1] == '.')) {
            size_t j = i + 1, d = 0;
            if (j < n && (s[j] == '+' || s[j] == '-'))
                j++;
            for (; j < n && is_digit(s[j]); j++)
                d++;
            if (d >= 3)
                r->long_exp = 1;
        } else if (is_digit(c) && (i == 0 || !is_digit(s[i - 1]))) {
            size_t j = i;
            while (j < n && is_digit(s[j]))
                j++;
            if (j - i >= 200)
                r->long_exp = 1;
        }
    }
    r->mode = r->empties == 0 ? CRM_JSON_PLAIN : r->true_first ? CRM_JSON_TAG : CRM_JSON_FILL;
}

/* The rewrite as wire.h describes it, into out (big enough); returns the length. */
static size_t ref_rewrite(const char *s, size_t n, int mode, char *out)
{
    size_t o = 0;
    int in_str = 0, esc = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
            out[o++] = c;
            continue;
        }
        if (c == '"')
            in_str = 1;
        if (c != '[' || mode == CRM_JSON_PLAIN) {
            out[o++] = c;
            continue;
        }
        size_t j = i + 1;
        while (j < n && is_ws(s[j]))
            j++;
        if (j < n && s[j] == ']') {
            memcpy(out + o, "[true]", 6);
            o += 6;
            i = j;
        } else if (mode == CRM_JSON_TAG) {
            memcpy(out + o, "[false,", 7);
            o += 7;
        } else {
            out[o++] = '[';
        }
    }
    return o;
}

static void fuzz_json(const char *s, size_t n)
{
    crm_json_info info;
    ref_info ref;
    crm_json_scan(s, n, &info);
    ref_scan(s, n, &ref);
    check(info.arrays == ref.arrays && info.empties == ref.empties);
    check(info.has_null == ref.has_null && info.long_exp == ref.long_exp);
    check(info.mode == ref.mode);
    check(info.empties <= info.arrays);
    check((info.mode == CRM_JSON_PLAIN) == (info.empties == 0));

    /* Exactly crm_json_rewrite_size bytes: ASan reports a write past them. */
    size_t cap = crm_json_rewrite_size(n, &info);
    check(cap > n);
    char *out = malloc(cap);
    check(out != NULL);
    size_t len = crm_json_rewrite(s, n, &info, out);
    check(len < cap && out[len] == '\0');
    if (info.mode == CRM_JSON_PLAIN)
        check(len == n && memcmp(out, s, n) == 0);

    char *want = malloc(cap > 7 * n + 1 ? cap : 7 * n + 1);
    check(want != NULL);
    size_t wlen = ref_rewrite(s, n, info.mode, want);
    check(wlen == len && memcmp(want, out, len) == 0);

    /* The rewritten text has the same arrays, none of them empty any more, and the same nulls
     * and long numbers: a second rewrite has nothing to do. */
    crm_json_info again;
    crm_json_scan(out, len, &again);
    check(again.arrays == info.arrays && again.has_null == info.has_null);
    check(again.long_exp == info.long_exp);
    if (info.mode != CRM_JSON_PLAIN) {
        check(again.empties == 0 && again.mode == CRM_JSON_PLAIN);
        /* in TAG mode every array starts with the tag: false, or true for a former empty one */
        if (info.mode == CRM_JSON_TAG) {
            ref_info r;
            ref_scan(out, len, &r);
            size_t trues = 0;
            int in_str = 0, esc = 0;
            for (size_t i = 0; i < len; i++) {
                char c = out[i];
                if (in_str) {
                    if (esc)
                        esc = 0;
                    else if (c == '\\')
                        esc = 1;
                    else if (c == '"')
                        in_str = 0;
                    continue;
                }
                if (c == '"')
                    in_str = 1;
                else if (c == '[') {
                    int f = len - i >= 7 && memcmp(out + i, "[false,", 7) == 0;
                    int t = len - i >= 6 && memcmp(out + i, "[true]", 6) == 0;
                    check(f || t);
                    trues += t;
                }
            }
            check(trues == info.empties);
        }
    }
    free(want);
    free(out);
}

/* ---- UTF-8 and path ids ---- */

/* Decodes code points and judges them, the way the standard words it (RFC 3629). */
static int ref_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static int ref_path_id(const char *s, size_t n)
{
    if (n < 1 || n > 128 || (n == 1 && s[0] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7F || strchr("/?#%\\", c))
            return 0;
        if (i + 1 < n && c == '.' && s[i + 1] == '.')
            return 0;
    }
    return ref_utf8((const unsigned char *)s, n);
}

static void fuzz_utf8(const char *s, size_t n)
{
    int u = crm_is_utf8(s, n);
    check(u == ref_utf8((const unsigned char *)s, n));
    /* ASCII is always UTF-8; a cut in the middle of a sequence never is */
    if (!crm_has_non_ascii(s, n))
        check(u);
    if (n > 0 && ((unsigned char)s[n - 1] & 0xC0) == 0xC0)
        check(!u);
    int id = crm_is_path_id(s, n);
    check(id == ref_path_id(s, n));
    if (id) {
        check(u && n >= 1 && n <= 128 && !crm_has_ctl(s, n));
        /* an id goes into a path as one segment: escaped, it holds no '/' and decodes back */
        char out[3 * 128];
        size_t o = crm_escape(s, n, out);
        check(memchr(out, '/', o) == NULL);
    }
    /* a valid id cut before a last ASCII byte stays valid, unless that leaves "." */
    if (id && n > 1 && (unsigned char)s[n - 1] < 0x80 && !(n == 2 && s[0] == '.'))
        check(crm_is_path_id(s, n - 1));
}

/* ---- the JSON plan ---- */

static void fuzz_plan(const char *s, size_t n)
{
    crm_plan p;
    int rc = crm_plan_scan(s, n, &p);
    check(rc == 0 || !p.simple);
    check(p.n <= p.cap);
    if (p.simple) {
        crm_json_info info;
        crm_json_scan(s, n, &info);
        check(p.long_num == info.long_exp);
        /* open containers, innermost last: the events they are */
        size_t *open = malloc((p.n + 1) * sizeof *open);
        check(open != NULL);
        size_t depth = 0;
        for (size_t j = 0; j < p.n; j++) {
            const crm_plan_event *e = &p.ev[j];
            check(e->kind == CRM_PLAN_ARRAY || e->kind == CRM_PLAN_OBJECT || e->kind == CRM_PLAN_NULL);
            check(e->end > j && e->end <= p.n);
            while (depth > 0 && p.ev[open[depth - 1]].end <= j)
                depth--;
            const crm_plan_event *parent = depth ? &p.ev[open[depth - 1]] : NULL;
            if (parent)
                check(e->end <= parent->end);
            if (e->kind == CRM_PLAN_NULL)
                check(e->end == j + 1 && e->in_object);
            if (e->in_object) {
                check(parent != NULL && parent->kind == CRM_PLAN_OBJECT);
                size_t off = e->key_off, len = e->key_len;
                /* a key in quotes; none at all (offset 0) only in malformed text, "{[]}" */
                check(off + len <= n);
                if (off > 0)
                    check(off + len < n && s[off - 1] == '"' && s[off + len] == '"');
                check(memchr(s + off, '\\', len) == NULL);
            } else if (parent) {
                check(parent->kind == CRM_PLAN_ARRAY);
                check(e->index >= 1 && e->index <= parent->count);
            } else {
                check(e->index == 0);
            }
            if (e->kind == CRM_PLAN_OBJECT)
                check(e->count == 0);
            if (e->kind != CRM_PLAN_NULL)
                open[depth++] = j;
        }
        /* an array's element events come in index order (equal indexes only in malformed text,
         * "[[1] [2]]", which lua-cjson refuses before json.c follows any plan) */
        for (size_t j = 0; j < p.n; j++) {
            const crm_plan_event *e = &p.ev[j];
            if (e->kind != CRM_PLAN_ARRAY)
                continue;
            uint32_t prev = 0;
            for (size_t k = j + 1; k < e->end; k = p.ev[k].end) {
                check(p.ev[k].index >= prev && p.ev[k].index >= 1);
                prev = p.ev[k].index;
            }
        }
        free(open);
    }
    crm_plan_free(&p);
    crm_plan_free(&p); /* twice is fine */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* Copy so that reads past the end are caught by ASan rather than hidden by the caller. */
    char *s = malloc(size - 1 ? size - 1 : 1);
    check(s != NULL);
    memcpy(s, data + 1, size - 1);
    switch (data[0] % 6) {
    case 0: fuzz_escape(s, size - 1); break;
    case 1: fuzz_headers(s, size - 1); break;
    case 2: fuzz_ctl(s, size - 1); break;
    case 3: fuzz_json(s, size - 1); break;
    case 4: fuzz_utf8(s, size - 1); break;
    default: fuzz_plan(s, size - 1); break;
    }
    free(s);
    return 0;
}
