/* The ngx transport's answer head in C (see http1.h). Reads bytes from the network: fuzzed by
 * src/fuzz/fuzz_http1.c. */
#include <string.h>

#include "http1.h"

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The status line data[0..len) (without its CRLF) -> 1 and out->minor, out->status | 0 */
static int status_line(const char *s, size_t len, crm_http1_head *out)
{
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || !is_digit(s[7]) || s[8] != ' ')
        return 0;
    if (!is_digit(s[9]) || !is_digit(s[10]) || !is_digit(s[11]))
        return 0;
    if (len > 12 && s[12] != ' ')
        return 0;
    out->minor = s[7] - '0';
    out->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    return 1;
}

/* A byte that ends the fast path inside a line: CR, LF or a control character other than tab. */
static int bad_in_line(unsigned char c)
{
    return (c < 0x20 && c != '\t');
}

/* A Content-Length value v[0..n) -> out->length (see http1.h) */
static void content_length(const char *v, size_t n, crm_http1_head *out)
{
    long long x = 0;
    if (out->length != -1 || n == 0 || n > 15) {
        out->length = -2;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(v[i])) {
            out->length = -2;
            return;
        }
        x = x * 10 + (v[i] - '0');
    }
    out->length = x;
}

/* One header line s[0..len) (not empty, no CR or LF) -> fn, unless it is skipped. */
static int header_line(const char *s, size_t len, crm_http1_header_fn fn, void *ud,
                       crm_http1_head *out)
{
    char name[CRM_HTTP1_NAME_MAX];
    if (s[0] == ' ' || s[0] == '\t')
        return 0; /* a folded line: the Lua reader appends it to the previous value */
    const char *colon = memchr(s, ':', len);
    if (colon == NULL || colon == s)
        return 1;
    size_t nl = (size_t)(colon - s);
    if (nl > CRM_HTTP1_NAME_MAX)
        return 0;
    for (size_t i = 0; i < nl; i++) {
        char c = s[i];
        if (c == ' ' || c == '\t')
            return 1;
        name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
    }
    const char *v = colon + 1, *ve = s + len;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    fn(ud, name, nl, v, (size_t)(ve - v));
    if (nl == 14 && memcmp(name, "content-length", 14) == 0)
        content_length(v, (size_t)(ve - v), out);
    return 1;
}

int crm_http1_parse_head(const char *data, size_t n, size_t limit, crm_http1_header_fn fn,
                         void *ud, crm_http1_head *out)
{
    const char *lf = memchr(data, '\n', n);
    if (lf == NULL || lf == data || lf[-1] != '\r')
        return 0;
    size_t slen = (size_t)(lf - data) - 1;
    for (size_t i = 0; i < slen; i++)
        if (data[i] == '\r')
            return 0;
    if (!status_line(data, slen, out) || out->status < 200 || out->status == 101)
        return 0;
    out->length = -1;
    size_t start = (size_t)(lf - data) + 1, p = start;
    while (p < n) {
        /* a line: data[p..e) then CRLF */
        size_t e = p;
        while (e < n && !bad_in_line((unsigned char)data[e]))
            e++;
        if (e + 1 >= n || data[e] != '\r' || data[e + 1] != '\n')
            return 0;
        if (e + 2 - start > limit)
            return 0;
        if (e == p) {
            out->body = e + 2;
            return 1;
        }
        if (!header_line(data + p, e - p, fn, ud, out))
            return 0;
        p = e + 2;
    }
    return 0;
}

int crm_http1_url_unsafe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}
